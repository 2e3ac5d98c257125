"""RFT (rejection-sampling fine-tuning): only verified, finished answers are trained on; a step
without one makes no update."""

import json

import pytest
from safetensors.torch import load_file

import postlab.rollout.episodes as episodes
import postlab.trainers.rft as rft
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.envs import make
from postlab.rollout.engine import Completion
from postlab.seeds import rl_seed
from postlab.trainers.rft import RFTBatchConfig, RFTConfig, RFTSamplingConfig, train_rft
from postlab.trainers.rl import RLEnvConfig as RFTEnvConfig

P, K = 3, 4  # problems per step, samples per problem


def config(ckpt, out, steps=2) -> RFTConfig:
    return RFTConfig(model=ModelConfig(path=str(ckpt)), env=RFTEnvConfig(name="math", eval_splits=()),
                     batch=RFTBatchConfig(P, K, 8), sampling=RFTSamplingConfig(max_new_tokens=48),
                     optim=OptimConfig(lr=1e-3, schedule="constant"),
                     run=RunConfig(out_dir=str(out), max_steps=steps, log_every=1, progress=False, tensorboard=False))


def experts(n: int) -> dict[str, str]:
    """Prompt text -> expert solution of RFT's first n training problems (run seed 0)."""
    env, out = make("math"), {}
    for i in range(n):
        obs = env.reset(rl_seed(0, i))
        out[obs.messages[0]["content"]] = env.expert()
    return out


def fake_generate(tok, answer_for_row):
    """Sample k of each problem: the text answer_for_row(row % K, expert) and how it finished."""
    known = experts(2 * P)

    def generate(model, tokenizer, prompts, params, backend=None):
        outs = []
        for r, ids in enumerate(prompts):
            expert = next(v for k, v in known.items() if k in tok.decode(ids))
            text, finish = answer_for_row(r % K, expert)
            token_ids = tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if finish == "stop" else [])
            outs.append(Completion(r, token_ids, text, [0.0] * len(token_ids), finish))
        return outs

    return generate


def _mixed(row: int, expert: str) -> tuple[str, str]:
    steps, answer = expert.split(" #### ")
    return [(expert, "stop"),  # correct
            (expert, "stop"),  # the same correct answer again: kept once
            (f"{steps} #### {int(answer) + 1}", "stop"),  # wrong
            (expert, "length")][row]  # correct text but cut off by max_new_tokens: not a finished answer


def test_keeps_only_verified_finished_distinct_answers(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.models import load_tokenizer

    tok = load_tokenizer(str(nano_checkpoint))
    monkeypatch.setattr(episodes, "generate", fake_generate(tok, _mixed))
    trained: list[str] = []
    pack = rft.pack_micro_batches

    def spy(seqs, micro):
        for s in seqs:
            trained.append(tok.decode([t for t, m in zip(s.input_ids, s.loss_mask) if m], skip_special_tokens=True))
        return pack(seqs, micro)

    monkeypatch.setattr(rft, "pack_micro_batches", spy)
    train_rft(config(nano_checkpoint, tmp_path / "run"))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["solve_rate"] == pytest.approx(3 / 4)  # the verifier accepts the cut-off one too ...
        assert (r["correct"], r["kept"], r["updated"]) == (2 * P, P, 1)  # ... RFT does not train on it
        assert r["tokens_trained"] > 0 and r["tokens_generated"] > 0
    known = set(experts(2 * P).values())
    assert len(trained) == 2 * P and set(trained) == known  # each problem's expert-equal answer, once


def test_a_step_without_a_correct_answer_makes_no_update(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.models import load_tokenizer

    tok = load_tokenizer(str(nano_checkpoint))
    monkeypatch.setattr(episodes, "generate", fake_generate(tok, lambda row, expert: (_mixed(2, expert)[0], "stop")))
    train_rft(config(nano_checkpoint, tmp_path / "run"))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["updated"], r["kept"], r["tokens_trained"]) for r in rows] == [(0, 0, 0), (0, 0, 0)]
    a = load_file(str(nano_checkpoint / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)


def test_env_without_a_verifier_is_rejected(nano_checkpoint, tmp_path):
    cfg = config(nano_checkpoint, tmp_path / "run")
    cfg.env = RFTEnvConfig(name="toy", eval_splits=())  # toy has no check_answer()
    with pytest.raises(ConfigError, match="env.name='toy': the environment has no check_answer"):
        train_rft(cfg)
    assert not (tmp_path / "run").exists()
