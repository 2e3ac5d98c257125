"""CHORD in the RL trainer (`algorithm: chord`): GRPO on the policy's groups plus mu x SFT on an expert
batch beside them, mu on its schedule, each term its own token mean over the step."""

import dataclasses
import json
from functools import partial
import math

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.config import ConfigError, OptimConfig, RunConfig
from postlab.models.io import load_model, load_tokenizer
from postlab.seeds import RL, SFT_EXPERT

from harness import rl_config

_cfg = partial(rl_config, algorithm="chord")


def test_the_expert_batch_follows_the_groups_on_sft_problems(nano_checkpoint, tmp_path):
    from postlab.trainers.rl_rollouts import play_step

    cfg = _cfg(nano_checkpoint, tmp_path / "r")
    model, tok = load_model(str(nano_checkpoint)).eval(), load_tokenizer(str(nano_checkpoint))
    eps = play_step(cfg, model, tok, step=1)
    n_expert = math.ceil(0.2 * 12)  # expert_data_ratio 0.2 of the 3 x 4 sampled sequences
    assert len(eps) == 12 + n_expert and [e.off_policy for e in eps] == [False] * 12 + [True] * n_expert
    assert all(e.seed in RL for e in eps[:12]) and all(e.seed in SFT_EXPERT for e in eps[12:])
    assert len({e.seed for e in eps[12:]} | {e.seed for e in play_step(cfg, model, tok, step=2)[12:]}) == 2 * n_expert


def test_the_objective_gets_mu_from_the_schedule_and_the_experts_token_share(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.objectives import spectrum
    from postlab.objectives.registry import OBJECTIVES
    from postlab.trainers.rl import train_rl

    seen = []

    def spy(inp, **kw):
        seen.append((kw, inp.off_policy.clone(), inp.advantages.clone()))
        return spectrum.chord(inp, **kw)

    monkeypatch.setitem(OBJECTIVES, "chord", dataclasses.replace(OBJECTIVES["chord"], fn=spy))
    train_rl(_cfg(nano_checkpoint, tmp_path / "r", chord=_chord(decay=4, peak=0.9, valley=0.1)))
    mus = sorted({round(kw["mu"], 6) for kw, _, _ in seen}, reverse=True)
    assert mus == [0.9, round(0.1 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)), 6)]  # steps 0 and 1
    for kw, off, adv in seen:
        assert torch.all(adv[off.bool()] == 0)  # expert samples carry no advantage: the SFT term alone
    step0 = [(kw, off) for kw, off, _ in seen if kw["mu"] == 0.9]
    off = torch.cat([o for _, o in step0])
    assert step0[0][0]["off_policy_share"] == pytest.approx(off.sum().item() / len(off))
    rows = [r for r in map(json.loads, open(tmp_path / "r" / "metrics.jsonl")) if "reward_mean" in r]
    assert all("expert_success" in r and "sft_nll" in r for r in rows)


def _chord(**kw):
    from postlab.trainers.rl import ChordConfig

    return ChordConfig(**kw)


def test_chord_learns_from_its_expert_batch_where_grpo_cannot(nano_checkpoint, tmp_path):
    """From a random-init model no sample is in format (reward -1, zero-variance groups): the SFT term on
    the expert batch teaches the answer format, and the policy's own samples follow."""
    from postlab.trainers.rl import RLBatchConfig, train_rl

    run = tmp_path / "chord"
    train_rl(_cfg(nano_checkpoint, run, batch=RLBatchConfig(8, 8, 64, 1), optim=OptimConfig(lr=1e-2,
                  schedule="constant"), run=RunConfig(out_dir=str(run), max_steps=20, progress=False,
                                                      tensorboard=False, log_every=1)))
    reward = [r["reward_mean"] for r in map(json.loads, open(run / "metrics.jsonl")) if "reward_mean" in r]
    print(f"\nCHORD, reward of the policy's own samples: {reward[:3]} -> {reward[-3:]}")
    assert reward[0] == -1.0 and sum(reward[-5:]) / 5 > -0.5


def test_chord_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="objective_args.mu: not a parameter"):
        _cfg("x", tmp_path, objective_args={"mu": 0.5})
    with pytest.raises(ConfigError, match="chord: the expert batch and mu schedule are CHORD's"):
        _cfg("x", tmp_path, algorithm="grpo", chord=_chord(expert_ratio=0.5))
    with pytest.raises(ConfigError, match="chord.expert_ratio"):
        _chord(expert_ratio=0.0)
