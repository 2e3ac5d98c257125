"""model.autocast and model.gradient_checkpointing: both run a training step on CPU, and with
autocast off the forward is exactly the plain Hugging Face forward (bit-identical to before)."""

import dataclasses
import json

import pytest
import torch

from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig

RECORDS = [{"prompt": f"{a}*{b}=", "completion": str(a * b)} for a in range(12) for b in range(6)]


def _setup(tmp_path, **model):
    from postlab.trainers.loop import open_run
    from postlab.trainers.sft import BatchConfig, SFTConfig, setup_sft

    cfg = SFTConfig(model=ModelConfig(preset="nano", **model), optim=OptimConfig(lr=1e-2, schedule="constant"),
                    batch=BatchConfig(16, 8), run=RunConfig(out_dir=str(tmp_path), max_steps=2, progress=False,
                                                            tensorboard=False, log_every=1, seed=3))
    session = open_run(cfg, "sft", None)
    return setup_sft(cfg, session, RECORDS, None)[0]


def _autocast_seen(model) -> list:
    seen = []
    model.model.register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_runs_a_step_with_float32_master_weights(tmp_path, dtype):
    trainer = _setup(tmp_path, autocast=dtype)
    seen = _autocast_seen(trainer.model)
    out = [trainer.step(i) for i in range(2)]
    assert seen and all(seen)
    assert all(torch.isfinite(torch.tensor(o.metrics["loss"])) for o in out)
    assert out[1].metrics["loss"] != out[0].metrics["loss"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32


def test_gradient_checkpointing_runs_a_step_with_the_same_update(tmp_path):
    plain = _setup(tmp_path / "a")
    ckpt = _setup(tmp_path / "b", gradient_checkpointing=True)
    # the property's name changed with transformers' rename (activation_*); either says the same
    on = ("is_activation_checkpointing" if hasattr(ckpt.model, "is_activation_checkpointing")
          else "is_gradient_checkpointing")
    assert getattr(ckpt.model, on) and not getattr(plain.model, on)
    a, b = plain.step(0).metrics, ckpt.step(0).metrics
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"],
                                                                                              rel=1e-5)
    for p, q in zip(plain.model.parameters(), ckpt.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_autocast_off_is_the_plain_forward_bit_for_bit(tmp_path):
    from postlab.data.records import encode_all
    from postlab.models.forward import outputs_from_logits, token_outputs
    from postlab.trainers.common import pack_micro_batches

    trainer = _setup(tmp_path)
    seen = _autocast_seen(trainer.model)
    batch = pack_micro_batches(encode_all(trainer.tokenizer, RECORDS[:6]), 6)[0]
    got = token_outputs(trainer.model, batch).logp
    raw = trainer.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                        logits_to_keep=batch.target_index)
    # the padded-row layout sums in another order than one packed row (~1e-7); bfloat16 would differ by ~1e-2
    torch.testing.assert_close(got, outputs_from_logits(raw.logits[0], batch.targets).logp, atol=1e-5, rtol=0)
    assert seen == [False, False]
    # an explicit `autocast: null, gradient_checkpointing: false` is the default, step for step
    default, explicit = _setup(tmp_path / "d"), _setup(tmp_path / "e", autocast=None, gradient_checkpointing=False)
    assert [default.step(i).metrics["loss"] for i in range(2)] == [explicit.step(i).metrics["loss"] for i in range(2)]


def test_rl_step_with_both_switches_ppo_value_head_and_reference(nano_checkpoint, tmp_path):
    import postlab.envs.toy  # noqa: F401
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    cfg = RLConfig(model=ModelConfig(path=str(nano_checkpoint), autocast="bfloat16", gradient_checkpointing=True),
                   env=RLEnvConfig(name="toy", eval_episodes=4), batch=RLBatchConfig(2, 2, 4, 1),
                   sampling=RLSamplingConfig(max_new_tokens=4), algorithm="ppo", beta=0.05,
                   optim=OptimConfig(lr=1e-3, schedule="constant"),
                   run=RunConfig(out_dir=str(tmp_path / "rl"), max_steps=1, progress=False, tensorboard=False))
    train_rl(cfg)
    row = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl")][0]
    assert torch.isfinite(torch.tensor([row["loss"], row["kl"], row["grad_norm"]])).all()
    assert abs(row["kl"]) < 1e-6  # the reference computes under the same autocast: KL 0 at step 0


def test_autocast_needs_float32_weights():
    with pytest.raises(ConfigError, match="model.autocast: .*model.dtype: float32"):
        ModelConfig(preset="nano", dtype="bfloat16", autocast="bfloat16")
    assert dataclasses.asdict(ModelConfig(preset="nano"))["autocast"] is None
