"""The DRIFT trainer on the shared loop: its step is weighted SFT on last turns, bad data stops it
before the run directory exists, and --resume refuses other data."""

import json

import pytest
import torch

from postlab.config import ConfigError, load_config
from postlab.data.records import DataError
from postlab.data.trajectories import TrajectoryWriter, read_trajectories, to_drift_records
from postlab.objectives.returns import drift_weights, trajectory_return
from postlab.trainers import common as common_mod
from postlab.trainers.drift import DRIFTConfig, load_drift_data, setup_drift, train_drift
from postlab.trainers.loop import open_run
from postlab.trainers.sft import SFTConfig, setup_sft

from .helpers import hand_trajectories, make_trajectory

QUIET = ["run.tensorboard=false", "run.progress=false", "run.device=cpu"]


def write(path, trajs):
    with TrajectoryWriter(path) as w:
        w.write(trajs)
    return path


def drift_cfg(ckpt, data, out, *extra) -> DRIFTConfig:
    return load_config(DRIFTConfig, None, [f"model.path={ckpt}", f"data.paths=[{data}]", f"run.out_dir={out}",
                                           "batch.sequences_per_step=4", "batch.micro_batch_sequences=2",
                                           "optim.grad_clip=null", *QUIET, *extra])


def first_step_gradient(trainer) -> dict:
    """The gradient the trainer's step hands to the optimizer (captured instead of stepping)."""
    grads = {}

    def capture(*_, **__):
        grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})

    trainer.optimizer.step = capture
    trainer.step(0)
    return grads


def assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-5), n


def drift_gradient(cfg) -> dict:
    data = load_drift_data(cfg)
    trainer, _ = setup_drift(cfg, open_run(cfg, "drift", None, data.fingerprint), data, cfg.model)
    return first_step_gradient(trainer)


def test_equal_weights_give_the_sft_gradient(nano_checkpoint, tmp_path):
    trajs = [{**t, "weight": 1.0} for t in hand_trajectories()]
    data = write(tmp_path / "t.jsonl", trajs)
    drift = drift_gradient(drift_cfg(nano_checkpoint, data, tmp_path / "drift", "weights.from_file=true"))
    # plain SFT (nll, per-sample token mean, then the batch mean) on the same records, unweighted
    records = [{k: v for k, v in r.items() if k != "weight"} for r in to_drift_records(trajs, [1.0] * len(trajs))]
    sft_cfg = load_config(SFTConfig, None, [f"model.path={nano_checkpoint}", "model.preset=null",
                                            f"run.out_dir={tmp_path / 'sft'}", "data.shuffle=false",
                                            "objective=nll", "aggregation=seq_mean_token_mean",
                                            "batch.sequences_per_step=4", "batch.micro_batch_sequences=2",
                                            "optim.grad_clip=null", *QUIET])
    sft_trainer, _ = setup_sft(sft_cfg, open_run(sft_cfg, "sft", None), records, None)
    sft = first_step_gradient(sft_trainer)
    assert_same_gradients(drift, sft)
    # the normalized reduction is invariant to a common scale of the weights: still SFT's gradient
    scaled = write(tmp_path / "s.jsonl", [{**t, "weight": 2.5} for t in trajs])
    normalized = drift_gradient(drift_cfg(nano_checkpoint, scaled, tmp_path / "norm", "weights.from_file=true",
                                          "reduction=normalized"))
    assert_same_gradients(normalized, sft)
    # while the default reduction (1/B) sum w_i l_i scales with them
    mean = drift_gradient(drift_cfg(nano_checkpoint, scaled, tmp_path / "mean", "weights.from_file=true"))
    assert_same_gradients({n: g / 2.5 for n, g in mean.items()}, sft)


def test_weights_are_recomputed_with_the_configs_gamma(nano_checkpoint, tmp_path):
    trajs = hand_trajectories()  # their stored returns are arbitrary: the trainer recomputes them
    data = write(tmp_path / "t.jsonl", trajs)
    cfg = drift_cfg(nano_checkpoint, data, tmp_path / "r", "weights.gamma=0.7", "weights.beta=0.2")
    got = [r["weight"] for r in load_drift_data(cfg).records]
    returns = [trajectory_return(t["verdicts"], t["answers"], gamma=0.7) for t in trajs]
    want = drift_weights(returns, [t["prompt_id"] for t in trajs], beta=0.2).weights
    assert got == pytest.approx(list(want))
    default = load_drift_data(drift_cfg(nano_checkpoint, data, tmp_path / "d")).records  # gamma 0.9, beta 0.1
    assert got != pytest.approx([r["weight"] for r in default])
    # drop_all_fail: prompts 0 and 1 each have a success; a third, all-fail prompt is dropped
    fails = trajs + [make_trajectory(2, 0, (False,), ("7",), 0.0),
                     make_trajectory(2, 1, (False, False), ("7", "8"), 0.0)]
    data2 = write(tmp_path / "f.jsonl", fails)
    kept = load_drift_data(drift_cfg(nano_checkpoint, data2, tmp_path / "x", "weights.drop_all_fail=true"))
    assert [r["prompt_id"] for r in kept.records] == [0, 0, 1, 1] and kept.stats["kept prompts"] == pytest.approx(2 / 3)
    # the share of the weight on successes: the all-fail prompt's two trajectories weigh ~1 each
    everything = load_drift_data(drift_cfg(nano_checkpoint, data2, tmp_path / "y"))
    w = [r["weight"] for r in everything.records]
    won = sum(wi for wi, t in zip(w, fails) if t["success"]) / sum(w)
    assert everything.stats["weight on successes"] == pytest.approx(won) and 0 < won < 1
    assert kept.stats["weight on successes"] == pytest.approx(
        sum(wi for wi, t in zip([r["weight"] for r in kept.records], trajs) if t["success"]) / 4)


def test_only_last_turn_tokens_carry_loss_in_the_trainers_batches(nano_checkpoint, char_tokenizer, tmp_path,
                                                                   monkeypatch):
    trajs = hand_trajectories()
    cfg = drift_cfg(nano_checkpoint, write(tmp_path / "t.jsonl", trajs), tmp_path / "run")
    seen = []
    real = common_mod.accumulate_gradients  # what every trainer's update_step runs

    def spy(model, micro, *args, **kwargs):
        seen.extend(micro)
        return real(model, micro, *args, **kwargs)

    monkeypatch.setattr(common_mod, "accumulate_gradients", spy)
    data = load_drift_data(cfg)
    trainer, steps = setup_drift(cfg, open_run(cfg, "drift", None, data.fingerprint), data, cfg.model)
    assert steps == 1  # 4 trajectories, batch 4, 1 epoch
    trainer.step(0)
    trained = []
    for mb in seen:
        for s in range(mb.num_seqs):
            trained.append(char_tokenizer.decode(mb.targets[mb.seq_idx == s].tolist()))
    assert trained == [t["messages"][-1]["content"] + "<|end|>" for t in trajs]


def test_a_bad_trajectory_file_stops_before_the_run_directory_exists(nano_checkpoint, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(make_trajectory()) + "\n" + json.dumps(make_trajectory(ret=0.5, sample=1))
                    .replace('"return": 0.5', '"return": NaN') + "\n")
    out = tmp_path / "run"
    with pytest.raises(DataError) as e:
        train_drift(drift_cfg(nano_checkpoint, data, out))
    assert "bad.jsonl:2" in str(e.value) and "field 'return'" in str(e.value)
    assert not out.exists()
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({k: v for k, v in make_trajectory().items() if k != "verdicts"}) + "\n")
    with pytest.raises(DataError, match="missing.jsonl:1: missing field 'verdicts'"):
        train_drift(drift_cfg(nano_checkpoint, missing, out))
    assert not out.exists()


def test_trajectories_of_two_references_are_refused(nano_checkpoint, tmp_path):
    other = make_trajectory(1, reference={"path": "other", "sha256": "cd" * 32})
    data = write(tmp_path / "t.jsonl", [make_trajectory(), other])
    with pytest.raises(DataError, match="ONE fixed reference"):
        load_drift_data(drift_cfg(nano_checkpoint, data, tmp_path / "run"))


def test_resume_with_other_data_is_refused(nano_checkpoint, tmp_path):
    data = write(tmp_path / "t.jsonl", hand_trajectories())
    run = tmp_path / "run"
    final = train_drift(drift_cfg(nano_checkpoint, data, run, "run.save_every=1"))
    assert final.is_dir()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 1  # run.max_steps 0: one epoch of 4 records in batches of 4
    for key in ("weight_mean", "weight_max", "ess", "kept_groups", "tokens_trained"):
        assert key in train_rows[0]
    assert train_rows[0]["weight_mean"] == pytest.approx(1.0)  # mean 1 per prompt, both prompts whole
    # the same path with other content: the fingerprint of the files differs
    trajs = read_trajectories(data)
    data.write_text("")
    write(data, [make_trajectory(5, 0)] + trajs[1:])
    with pytest.raises(ConfigError, match="training data differ"):
        train_drift(drift_cfg(nano_checkpoint, data, run, "run.max_steps=2"), resume=run)


def test_evaluation_during_training_is_the_shared_env_section(nano_checkpoint, tmp_path):
    """DRIFT evaluates through the one env section and evaluator every trainer uses: greedy success
    and, on the multi-turn env, multi@1 / multi@K and the correction rate, at the end of the run."""
    data = write(tmp_path / "t.jsonl", hand_trajectories())
    run = tmp_path / "run"
    train_drift(drift_cfg(nano_checkpoint, data, run, "env.eval_splits=[id]", "env.eval_episodes=3",
                          "env.kwargs.max_attempts=2", "env.max_turns=4", "env.eval_max_new_tokens=6"))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (ev,) = [r for r in rows if r["kind"] == "eval"]
    for key in ("eval_id_success", "eval_id_multi@1", "eval_id_multi@2", "eval_id_correction_rate"):
        assert 0.0 <= ev[key] <= 1.0, key
    assert ev["eval_id_multi@1"] <= ev["eval_id_multi@2"] == ev["eval_id_success"]
    assert not [r for r in rows if r["kind"] == "eval" and r is not ev]
    # the default: no periodic evaluation (studies evaluate in their own eval stages)
    train_drift(drift_cfg(nano_checkpoint, data, tmp_path / "quiet"))
    assert '"kind": "eval"' not in (tmp_path / "quiet" / "metrics.jsonl").read_text()


def test_config_errors_name_the_key(nano_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="data.paths"):
        load_config(DRIFTConfig, None, ["run.out_dir=x"])
    with pytest.raises(ConfigError, match="weights.clip"):
        drift_cfg(nano_checkpoint, "t.jsonl", tmp_path, "weights.clip=0.5")
    with pytest.raises(ConfigError, match="weights.from_file"):
        drift_cfg(nano_checkpoint, "t.jsonl", tmp_path, "weights.from_file=true", "weights.drop_all_fail=true")
    cfg = drift_cfg(nano_checkpoint, "t.jsonl", tmp_path, "env.eval_episodes=2", "env.eval_splits=[nope]")
    with pytest.raises(ConfigError, match="env.eval_splits: .*nope"):
        train_drift(cfg)
    with pytest.raises(ConfigError, match="'eval' moved to env"):  # the section of earlier versions
        drift_cfg(nano_checkpoint, "t.jsonl", tmp_path, "eval.episodes=2")
