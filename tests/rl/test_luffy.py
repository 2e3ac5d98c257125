"""LUFFY in the RL trainer (`algorithm: luffy`): mixed groups of the policy's samples and the env's
expert trace, advantages over the mixed group, expert tokens trained off-policy; with no expert
trace and the clip on it is Dr. GRPO, bit for bit."""

import dataclasses
import json
from functools import partial

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.config import ConfigError, OptimConfig, RunConfig
from postlab.envs import make
from postlab.models.io import load_model, load_tokenizer

from harness import rl_config

_cfg = partial(rl_config, algorithm="luffy")


def test_a_group_is_the_policys_samples_then_the_expert_trace(nano_checkpoint, tmp_path):
    from postlab.trainers.rl_rollouts import play_step

    cfg = _cfg(nano_checkpoint, tmp_path / "r")
    model, tok = load_model(str(nano_checkpoint)).eval(), load_tokenizer(str(nano_checkpoint))
    eps = play_step(cfg, model, tok, step=0)
    assert len(eps) == 12 and [e.off_policy for e in eps] == [False, False, False, True] * 3
    for g in range(3):
        group = eps[4 * g:4 * g + 4]
        assert len({e.seed for e in group}) == 1  # one prompt per group
        expert = group[-1]
        env = make("toy")
        env.reset(seed=expert.seed)
        text = env.expert()  # the env's expert answer on this prompt, scored by the same verifier
        assert expert.turns[0].text == text and expert.turns[0].token_ids[-1] == tok.eos_token_id
        assert expert.turns[0].token_ids[:-1] == tok.encode(text, add_special_tokens=False)
        assert expert.success == (int(text) > env.k) and expert.turns[0].logprobs == [0.0] * 2
        assert expert.input_ids[:expert.turns[0].start] == group[0].input_ids[:group[0].turns[0].start]
    # the policy's samples are those GRPO would draw with G - 1 samples per prompt
    grpo = dataclasses.replace(cfg, algorithm="dr_grpo", batch=dataclasses.replace(cfg.batch, samples_per_prompt=3))
    plain = play_step(grpo, model, tok, step=0)
    assert [e.input_ids for e in eps if not e.off_policy] == [e.input_ids for e in plain]


def test_the_objective_sees_the_expert_tokens_as_off_policy(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.objectives import spectrum

    seen = []
    real = spectrum.luffy

    def spy(inp, **kw):
        seen.append((inp.off_policy.clone(), inp.advantages.clone()))
        return real(inp, **kw)

    from postlab.objectives.registry import OBJECTIVES

    monkeypatch.setitem(OBJECTIVES, "luffy", dataclasses.replace(OBJECTIVES["luffy"], fn=spy))
    from postlab.trainers.rl import train_rl

    train_rl(_cfg(nano_checkpoint, tmp_path / "r", run=RunConfig(out_dir=str(tmp_path / "r"), max_steps=1,
                                                                 progress=False, tensorboard=False)))
    off = torch.cat([o for o, _ in seen]).bool()
    # 3 expert traces of 2 tokens each (a digit and EOS); every other token is the policy's own
    assert int(off.sum()) == 6
    rows = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    (train,) = [r for r in rows if "reward_mean" in r]
    assert 0.0 <= train["expert_success"] <= 1.0 and "off_policy_shaped" in train


def test_without_expert_traces_and_with_the_clip_it_is_dr_grpo(nano_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from postlab.trainers.rl import train_rl

    a = train_rl(_cfg(nano_checkpoint, tmp_path / "a", expert_traces=0, objective_args={"clip": True}))
    # LUFFY's published entropy bonus (0.001) given to Dr. GRPO too: the same loss term on the same tokens
    b = train_rl(_cfg(nano_checkpoint, tmp_path / "b", algorithm="dr_grpo", entropy_coef=0.001))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_expert_traces_need_an_off_policy_loss_and_room_in_the_group(tmp_path):
    with pytest.raises(ConfigError, match="expert_traces: 'grpo' .*luffy"):
        _cfg("x", tmp_path, algorithm="grpo", expert_traces=1)
    with pytest.raises(ConfigError, match=r"expert_traces must be in \[0, batch.samples_per_prompt\)"):
        _cfg("x", tmp_path, expert_traces=4)
    assert _cfg("x", tmp_path).experts_per_group == 1 and _cfg("x", tmp_path, algorithm="grpo").experts_per_group == 0


def test_luffy_learns_what_no_sample_of_the_start_solves(nano_checkpoint, tmp_path):
    """From a random-init model every sample fails the toy format (reward -1), so every GRPO group has
    zero variance and GRPO cannot move; LUFFY's expert trace is the group's only better answer, and the
    policy learns the answer format from it (the claim of LUFFY's paper: gains where pass@k = 0)."""
    from postlab.trainers.rl import RLBatchConfig, train_rl

    # No entropy bonus here: from a random init the shaped expert gradient is tiny (f'(p) ~ p / 0.1 at p ~ 1/vocab)
    # and the published 0.001 bonus outweighs it (measured: the policy's reward stays ~-1.0 for 25 steps with it)
    common = dict(batch=RLBatchConfig(8, 8, 64, 1), optim=OptimConfig(lr=3e-2, schedule="constant"), entropy_coef=0.0)
    run = lambda name, steps: RunConfig(out_dir=str(tmp_path / name), max_steps=steps, progress=False,  # noqa: E731
                                        tensorboard=False, log_every=1)
    train_rl(_cfg(nano_checkpoint, tmp_path / "luffy", run=run("luffy", 25), **common))  # measured: 1.0 from ~step 20
    train_rl(_cfg(nano_checkpoint, tmp_path / "grpo", algorithm="dr_grpo", run=run("grpo", 10), **common))

    def rewards(name):
        return [r["reward_mean"] for r in map(json.loads, open(tmp_path / name / "metrics.jsonl"))
                if "reward_mean" in r]

    luffy, grpo = rewards("luffy"), rewards("grpo")
    print(f"\nreward of the policy's own samples, first/last 5 steps: LUFFY {luffy[:5]} -> {luffy[-5:]}, "
          f"Dr. GRPO {grpo[:5]} -> {grpo[-5:]}")
    assert max(grpo) == min(grpo) == -1.0  # no sample ever succeeds in format: nothing to learn from
    assert luffy[0] == -1.0 and sum(luffy[-5:]) / 5 > 0.5  # the policy's own samples now mostly solve the task
