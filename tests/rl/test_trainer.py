"""RL trainer: config validation, every algorithm end to end, resume, and a CPU learning test."""

import dataclasses
import json

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.trainers.common import TrainingError
from postlab.envs import make
from postlab.eval.evaluate import evaluate

from harness import rl_config


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory):
    """A nano model SFT-trained on the toy env's (format-only) expert: ~40% ID success."""
    from postlab.trainers.sft import BatchConfig, SFTConfig, train_sft

    records = []
    for s in range(2000):
        env = make("toy")
        obs = env.reset(seed=10_000 + s)
        records.append({"messages": obs.messages + [{"role": "assistant", "content": env.expert()}]})
    cfg = SFTConfig(model=ModelConfig(preset="nano"), optim=OptimConfig(lr=3e-3, schedule="constant"),
                    batch=BatchConfig(32, 32), run=RunConfig(out_dir=str(tmp_path_factory.mktemp("sft")), max_steps=60,
                                                             progress=False, tensorboard=False))
    return train_sft(cfg, train_records=records)


def _cfg(ckpt, out, **kw):
    from postlab.trainers.rl import RLEnvConfig

    kw.setdefault("env", RLEnvConfig(name="toy", eval_episodes=16))
    return rl_config(ckpt, out, prompts=4, micro=8, **kw)


def test_config_rejects_invalid_combinations(tmp_path):
    from postlab.trainers.rl import RLBatchConfig

    with pytest.raises(ConfigError,
                       match="valid: grpo, dr_grpo, dapo, gspo, rloo, reinforce_pp, luffy, chord, uft, opd, gkd, ppo"):
        _cfg("x", tmp_path, algorithm="ppo2")
    with pytest.raises(ConfigError, match="samples_per_prompt must be >= 2"):
        _cfg("x", tmp_path, batch=RLBatchConfig(4, 1, 4))
    with pytest.raises(ConfigError, match="micro_batch_sequences"):
        _cfg("x", tmp_path, batch=RLBatchConfig(2, 2, 8))
    with pytest.raises(ConfigError, match="objective_args.eps: .*valid"):
        _cfg("x", tmp_path, objective_args={"eps": 0.1})
    with pytest.raises(ConfigError, match="aggregation"):
        _cfg("x", tmp_path, aggregation="mean")
    assert _cfg("x", tmp_path, batch=RLBatchConfig(3, 5, 15)).batch.sequences_per_step == 15


@pytest.mark.parametrize("algorithm,extra", [
    ("grpo", {"beta": 0.04}), ("dr_grpo", {}), ("dapo", {"overlong_buffer": 1}), ("gspo", {}), ("rloo", {}),
    ("reinforce_pp", {}), ("ppo", {"env_turns": 2}),
])
def test_every_algorithm_runs(sft_checkpoint, tmp_path, algorithm, extra):
    from postlab.trainers.rl import RLBatchConfig, RLEnvConfig

    turns = extra.pop("env_turns", 1)
    cfg = _cfg(sft_checkpoint, tmp_path / "run", algorithm=algorithm, env=RLEnvConfig(name="toy", max_turns=turns,
               eval_episodes=8, eval_splits=("id", "ood")), batch=RLBatchConfig(4, 4, 8, 2), **extra)
    final = train_rl_quiet(cfg)
    assert (final / "model.safetensors").exists()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in rows if "reward_mean" in r]
    assert len(train) == 2
    for key in ("reward_std", "zero_std_groups", "completion_len", "truncation", "success_turn_1", "time_generation",
                "time_training", "tokens_per_s", "reward/correct_mean", "kept_fraction"):
        assert key in train[-1], key
    if train[-1]["kept_fraction"] > 0:
        assert "entropy" in train[-1] and "clip_low" in train[-1] and "clip_high" in train[-1]
    assert any("eval_ood_success" in r for r in rows)
    if algorithm == "grpo":
        assert "kl" in train[-1]
    if algorithm == "ppo":
        assert (final / "value_head.safetensors").exists() and "value_loss" in train[-1]


def train_rl_quiet(cfg, **kw):
    from postlab.trainers.rl import train_rl

    return train_rl(cfg, **kw)


def test_resume_is_bit_identical(sft_checkpoint, tmp_path):
    from safetensors.torch import load_file

    full = train_rl_quiet(_cfg(sft_checkpoint, tmp_path / "a", run=RunConfig(
        out_dir=str(tmp_path / "a"), max_steps=4, progress=False, tensorboard=False)))
    half = _cfg(sft_checkpoint, tmp_path / "b", run=RunConfig(out_dir=str(tmp_path / "b"), max_steps=2, save_every=2,
                                                              progress=False, tensorboard=False))
    train_rl_quiet(half)
    resumed = train_rl_quiet(dataclasses.replace(half, run=dataclasses.replace(half.run, max_steps=4)),
                             resume=tmp_path / "b")
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_user_reward_function(sft_checkpoint, tmp_path):
    seen = []

    def prefers_nine(episode):
        seen.append(episode.turns[-1].text)
        return {"nine": float(episode.turns[-1].text.strip() == "9"), "const": 0.5}

    train_rl_quiet(_cfg(sft_checkpoint, tmp_path / "r", run=RunConfig(out_dir=str(tmp_path / "r"), max_steps=1,
                                                                      progress=False, tensorboard=False)),
                   reward_fn=prefers_nine)
    assert len(seen) == 16


def test_rl_raises_reward_of_sft_model(sft_checkpoint, tmp_path):
    """GRPO on the toy env: sampled (temperature 1) success of the SFT model rises within ~25 steps."""
    from postlab.models.io import load_model, load_tokenizer
    from postlab.trainers.rl import RLBatchConfig

    def sampled_success(path):
        model, tok = load_model(path), load_tokenizer(path)
        res = evaluate(model, tok, "toy", "id", n_episodes=256, seed=777, decoding="sampled", temperature=1.0,
                       max_new_tokens=4, max_turns=1)
        return res["success_rate"], res["mean_reward"]

    before = sampled_success(sft_checkpoint)
    cfg = _cfg(sft_checkpoint, tmp_path / "learn", batch=RLBatchConfig(8, 8, 64, 1),
               run=RunConfig(out_dir=str(tmp_path / "learn"), max_steps=25, progress=False, tensorboard=False))
    after = sampled_success(train_rl_quiet(cfg))
    print(f"\ntoy env, sampled success / mean reward: before RL {before[0]:.3f} / {before[1]:.3f}, "
          f"after 25 GRPO steps {after[0]:.3f} / {after[1]:.3f}")
    assert after[0] >= before[0] + 0.15 and after[1] > before[1]


# ------------------------------------------------------------------------------ the run-directory contract


def _rows(path):
    return [json.loads(line) for line in open(path / "metrics.jsonl")]


def test_rl_refuses_to_overwrite_a_finished_run(sft_checkpoint, tmp_path):
    out = tmp_path / "run"
    final = train_rl_quiet(_cfg(sft_checkpoint, out, run=RunConfig(out_dir=str(out), max_steps=1, progress=False,
                                                                    tensorboard=False, log_every=1)))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "tb" not in p.parts}
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train_rl_quiet(_cfg(sft_checkpoint, out, optim=OptimConfig(lr=1e-3, schedule="constant")))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "tb" not in p.parts}
    assert after == before and (final / "model.safetensors").exists()


@pytest.mark.parametrize("env_kw, words", [
    ({"name": "toyy"}, ["unknown environment 'toyy'", "toy"]),
    ({"name": "toy", "split": "nope"}, ["env.split", "nope"]),
    ({"name": "toy", "eval_splits": ("id", "nope")}, ["env.eval_splits", "nope"]),
])
def test_env_errors_fail_before_anything_runs(sft_checkpoint, tmp_path, env_kw, words):
    from postlab.trainers.rl import RLEnvConfig

    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train_rl_quiet(_cfg(sft_checkpoint, out, env=RLEnvConfig(**env_kw)))
    assert all(w in str(e.value) for w in words) and not out.exists()


def test_an_evaluation_error_never_loses_the_trained_model(sft_checkpoint, tmp_path, monkeypatch):
    import sys

    ev = sys.modules["postlab.eval.evaluate"]  # the module (postlab.eval re-exports the function)

    def broken(*a, **k):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(ev, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train_rl_quiet(_cfg(sft_checkpoint, tmp_path / "run"))
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_resume_checks_the_run_and_records_allowed_changes(sft_checkpoint, tmp_path):
    from postlab.trainers.sft import SFTConfig, train_sft

    out = tmp_path / "run"
    cfg = _cfg(sft_checkpoint, out, run=RunConfig(out_dir=str(out), max_steps=2, save_every=2, progress=False,
                                                  tensorboard=False, log_every=1))
    train_rl_quiet(cfg)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.0005 -> 0.001"):  # another learning rate
        train_rl_quiet(dataclasses.replace(cfg, optim=OptimConfig(lr=1e-3, schedule="constant")), resume=out)
    with pytest.raises(ConfigError, match="holds a 'rl:grpo' run, not 'sft'"):  # another trainer
        train_sft(SFTConfig(model=ModelConfig(path=str(sft_checkpoint)), run=RunConfig(out_dir=str(out))),
                  train_records=[{"prompt": "a", "completion": "b"}], resume=out)
    with pytest.raises(ConfigError, match="no run there"):  # a mistyped path
        train_rl_quiet(cfg, resume=tmp_path / "rnu")
    assert not (tmp_path / "rnu").exists()
    longer = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, max_steps=3))
    train_rl_quiet(longer, resume=out)
    changes = [json.loads(line) for line in open(out / "resumes.jsonl")]
    assert changes[-1]["changes"] == [{"key": "run.max_steps", "old": 2, "new": 3}]
    assert "max_steps: 3" in (out / "config.yaml").read_text()
    steps = [r["step"] for r in _rows(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3]  # no duplicate rows


def test_rl_seed_1_never_trains_on_its_evaluation_problems(sft_checkpoint, tmp_path, monkeypatch):
    """The defect: RL drew `run.seed * 1_000_000 + i`, which for seed 1 are evaluation's `1_000_000 + i`."""
    from postlab.envs.toy import ToyDigitsEnv as ToyEnv

    seen = []
    orig = ToyEnv.reset

    def reset(self, seed):
        seen.append(seed)
        return orig(self, seed)

    monkeypatch.setattr(ToyEnv, "reset", reset)
    cfg = _cfg(sft_checkpoint, tmp_path / "run", run=RunConfig(out_dir=str(tmp_path / "run"), max_steps=2, seed=1,
                                                               progress=False, tensorboard=False))
    cfg.env.eval_episodes = 64
    train_rl_quiet(cfg)
    n_train = 2 * cfg.batch.sequences_per_step
    train_seeds, eval_seeds = set(seen[:n_train]), set(seen[n_train:])
    assert len(eval_seeds) == 64 and not train_seeds & eval_seeds


def test_non_finite_loss_names_the_step_and_the_last_good_checkpoint(sft_checkpoint, tmp_path):
    out = tmp_path / "run"
    calls = {"n": 0}

    def nan_after_two_steps(episode):
        calls["n"] += 1
        return float("nan") if calls["n"] > 2 * 16 else 1.0 - calls["n"] % 2

    cfg = _cfg(sft_checkpoint, out, run=RunConfig(out_dir=str(out), max_steps=4, save_every=2, progress=False,
                                                  tensorboard=False))
    with pytest.raises(TrainingError) as e:
        train_rl_quiet(cfg, reward_fn=nan_after_two_steps)
    msg = str(e.value)
    assert "non-finite" in msg and "at step 3" in msg and "step_000002" in msg and f"--resume {out}" in msg


def test_a_renamed_key_says_its_new_name():
    from postlab.config import load_config
    from postlab.trainers.rl import RLConfig

    with pytest.raises(ConfigError, match="'batch.ppo_epochs' was renamed to 'updates_per_batch'"):
        load_config(RLConfig, overrides=["model.path=x", "batch.ppo_epochs=4"])


def test_periodic_eval_reports_sampled_pass_at_1_and_pass_at_n_beside_greedy(sft_checkpoint, tmp_path):
    """env.eval_samples = 4: every eval row has greedy success, sampled pass@1 and pass@4, and they
    equal `evaluate` run by hand on the final model (the same problems and sampling seed)."""
    from postlab.eval.evaluate import evaluate
    from postlab.models.io import load_model, load_tokenizer
    from postlab.trainers.rl import RLEnvConfig

    cfg = _cfg(sft_checkpoint, tmp_path / "run", env=RLEnvConfig(name="toy", eval_episodes=8, eval_samples=4))
    final = train_rl_quiet(cfg)
    row = [r for r in _rows(tmp_path / "run") if r.get("kind") == "eval"][-1]
    assert {"eval_id_success", "eval_id_pass1", "eval_id_pass4"} <= set(row)
    model, tok = load_model(str(final)).eval(), load_tokenizer(str(final))
    by_hand = evaluate(model, tok, "toy", "id", n_episodes=8, decoding="sampled", n_samples=4, k=4,
                       max_turns=1, max_new_tokens=4)
    assert row["eval_id_pass1"] == pytest.approx(by_hand["success_rate"])
    assert row["eval_id_pass4"] == pytest.approx(by_hand["pass_at_k"])
    assert row["eval_id_pass1"] <= row["eval_id_pass4"]
    with pytest.raises(ConfigError, match="eval_samples"):
        _cfg(sft_checkpoint, tmp_path / "bad", env=RLEnvConfig(name="toy", eval_samples=-1))
