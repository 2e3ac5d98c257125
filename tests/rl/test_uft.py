"""UFT in the RL trainer (`algorithm: uft`): a prefix of the expert's solution starts the answer, its
length annealed to nothing; GRPO on the continuation, the hint's CE beside it."""

import dataclasses
import json
from functools import partial

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.config import ConfigError, RunConfig
from postlab.envs import make
from postlab.models.io import load_model, load_tokenizer

from harness import rl_config

_cfg = partial(rl_config, env="math", max_new_tokens=6, algorithm="uft")


def _uft(**kw):
    from postlab.trainers.rl import UFTConfig

    return UFTConfig(**kw)


def test_solution_segments_and_the_staged_hint(nano_checkpoint, tmp_path):
    from postlab.trainers.rl_rollouts import play_step, solution_segments

    assert solution_segments("a\nb\nc") == ["a\n", "b\n", "c"]
    assert solution_segments("x = 3 + 4") == ["x ", "= ", "3 ", "+ ", "4"]
    assert solution_segments("42") == ["4", "2"]
    cfg = _cfg(nano_checkpoint, tmp_path / "r", uft=_uft(staged=True, hint_steps=12))
    model, tok = load_model(str(nano_checkpoint)).eval(), load_tokenizer(str(nano_checkpoint))
    for step in (0, 2, 12):  # staged, 12 hint steps, <= 5 chunks: k = 5 at step 0, 4 at step 2, 0 at step 12
        eps = play_step(cfg, model, tok, step=step)
        for g in range(3):
            group = eps[4 * g:4 * g + 4]
            assert len({e.hint for e in group}) == 1  # one hint per prompt, shared by its samples
            env = make("math")
            env.reset(seed=group[0].seed)
            segments = solution_segments(env.expert())
            from postlab.objectives.spectrum import hint_boundaries, staged_hint_chunks

            sep = hint_boundaries(len(segments))
            k = staged_hint_chunks(step, 12, len(sep) - 1)
            assert group[0].hint == "".join(segments[:sep[k]])
            for e in group:
                turn = e.turns[0]
                assert turn.text.startswith(e.hint) and e.hint_tokens == len(tok.encode(e.hint, add_special_tokens=False))
                assert turn.token_ids[:e.hint_tokens] == e.input_ids[turn.start:turn.start + e.hint_tokens]
                assert turn.logprobs[:e.hint_tokens] == [0.0] * e.hint_tokens
    assert all(e.hint == "" for e in eps)  # step 12: the hint phase is over


def test_the_objective_trains_the_hint_tokens_apart(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.objectives import spectrum
    from postlab.objectives.registry import OBJECTIVES
    from postlab.trainers.rl import train_rl

    seen = []

    def spy(inp, **kw):
        seen.append((kw, inp.off_policy.clone()))
        return spectrum.uft(inp, **kw)

    monkeypatch.setitem(OBJECTIVES, "uft", dataclasses.replace(OBJECTIVES["uft"], fn=spy))
    train_rl(_cfg(nano_checkpoint, tmp_path / "r", uft=_uft(staged=True, hint_steps=12),
                  run=RunConfig(out_dir=str(tmp_path / "r"), max_steps=1, progress=False, tensorboard=False)))
    off = torch.cat([o for _, o in seen])
    assert 0 < off.sum() < len(off)  # the hint tokens (a full solution at step 0), then the continuation
    assert seen[0][0]["off_policy_share"] == pytest.approx(off.sum().item() / len(off))
    rows = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    assert any("hint_nll" in r for r in rows)


def test_without_a_hint_it_is_grpo(nano_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from postlab.trainers.rl import train_rl

    a = train_rl(_cfg(nano_checkpoint, tmp_path / "a", uft=_uft(p_low=0.0, p_high=0.0), aggregation="token_mean"))
    b = train_rl(_cfg(nano_checkpoint, tmp_path / "b", algorithm="grpo", aggregation="token_mean", entropy_coef=0.001))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_uft_config_errors(tmp_path):
    from postlab.trainers.rl import RLEnvConfig

    with pytest.raises(ConfigError, match="uft: the hint schedule is UFT's"):
        _cfg("x", tmp_path, algorithm="grpo", uft=_uft(hint_steps=10))
    with pytest.raises(ConfigError, match="env.max_turns: UFT's hint starts a single answer"):
        _cfg("x", tmp_path, env=RLEnvConfig(name="math", max_turns=3))
    with pytest.raises(ConfigError, match="objective_args.off_policy_share: not a parameter"):
        _cfg("x", tmp_path, objective_args={"off_policy_share": 0.5})
    with pytest.raises(ConfigError, match="uft: hint_steps"):
        _uft(p_low=0.9, p_high=0.1)
