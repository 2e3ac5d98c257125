"""LoRA (model.lora, postlab.models.lora): adapter saves plain peft loads, the reference is the
adapter-disabled policy (KL 0 at step 0), only adapters learn, resume restores the adapter."""

import dataclasses
import json
import sys

import pytest
import torch

pytest.importorskip("peft")

from postlab.config import ConfigError, LoRAConfig, ModelConfig, OptimConfig, RunConfig  # noqa: E402

RECORDS = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(4)]
LORA = LoRAConfig(r=4, alpha=8.0, dropout=0.1)


def _sft_cfg(base, out, lora=LORA, **run):
    from postlab.trainers.sft import BatchConfig, SFTConfig

    return SFTConfig(model=ModelConfig(path=str(base), lora=lora), optim=OptimConfig(lr=2e-2, schedule="constant"),
                     batch=BatchConfig(8, 4), run=RunConfig(out_dir=str(out), max_steps=3, progress=False,
                                                            tensorboard=False, log_every=1, **run))


def _train_sft(cfg, resume=None):
    """Run SFT and keep the trainer (its in-memory policy)."""
    from postlab.trainers.loop import fingerprint, open_run, run_loop
    from postlab.trainers.sft import setup_sft

    session = open_run(cfg, "sft", resume, data_fingerprint=fingerprint(RECORDS))
    trainer, _ = setup_sft(cfg, session, RECORDS, None)
    return trainer, run_loop(trainer, cfg.run, session)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_sft_adapter_loads_with_plain_peft_and_matches_the_policy(nano_checkpoint, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from postlab.models.io import load_model

    cfg = _sft_cfg(nano_checkpoint, tmp_path / "run", lora=dataclasses.replace(LORA, save_merged=True))
    trainer, final = _train_sft(cfg)
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "merged"} <= names
    assert "model.safetensors" not in names  # the adapter only, not a second copy of the base
    ckpt = tmp_path / "run" / "checkpoints" / "step_000003"
    assert (ckpt / "adapter_model.safetensors").exists() and (ckpt / "trainer_state.safetensors").exists()

    policy = trainer.model.eval()
    ids = torch.tensor([[3, 40, 41, 42, 50, 61, 7, 9]])
    want = _logits(policy, ids)
    base = AutoModelForCausalLM.from_pretrained(str(nano_checkpoint))
    assert not torch.allclose(_logits(base, ids), want, atol=1e-4)  # training moved the adapter
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(nano_checkpoint)), str(final)).eval()
    torch.testing.assert_close(_logits(plain, ids), want, atol=1e-5, rtol=0)
    merged = AutoModelForCausalLM.from_pretrained(str(final / "merged")).eval()
    torch.testing.assert_close(_logits(merged, ids), want, atol=1e-5, rtol=0)
    # postlab's own loader (evaluation, RL from this run's final/) merges the adapter onto its base
    torch.testing.assert_close(_logits(load_model(str(final)).eval(), ids), want, atol=1e-5, rtol=0)
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(nano_checkpoint.resolve())


def test_only_adapter_parameters_receive_gradients(nano_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from postlab.data.records import encode_all
    from postlab.models.forward import token_outputs
    from postlab.trainers.common import pack_micro_batches

    cfg = _sft_cfg(nano_checkpoint, tmp_path / "run")
    trainer, _ = _train_sft(cfg)
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if n in trainable}
    batch = pack_micro_batches(encode_all(trainer.tokenizer, RECORDS[:4]), 4)[0]
    token_outputs(model.train(), batch).logp.sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    # after 3 optimizer steps the base weights are bit-identical to the checkpoint's
    base = load_file(str(nano_checkpoint / "model.safetensors"))
    state = model.state_dict()
    for name, tensor in base.items():
        key = name if name in state else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state[key], tensor), name


def test_reference_is_the_adapter_disabled_policy_kl_zero_at_step_0(nano_checkpoint, tmp_path):
    import postlab.envs.toy  # noqa: F401
    from postlab.models import lora
    from postlab.data.records import encode_all
    from postlab.models.forward import token_outputs
    from postlab.trainers.common import pack_micro_batches
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl
    from postlab.trainers.setup import load_reference

    # directly: the reference's log-probs equal the policy's before any update, with no second model
    cfg = _sft_cfg(nano_checkpoint, tmp_path / "sft", lora=dataclasses.replace(LORA, dropout=0.0))
    trainer, _ = _train_sft(cfg)
    policy = trainer.model
    ref = load_reference(cfg.model, "cpu", "test", policy=policy)
    assert isinstance(ref, lora.Reference)
    batch = pack_micro_batches(encode_all(trainer.tokenizer, RECORDS * 3), 120)[0]
    assert batch.num_seqs > 1  # the padded-row path: ref.model, then ref.lm_head
    with torch.no_grad():
        base_logp = token_outputs(load_reference(dataclasses.replace(cfg.model, lora=None), "cpu", "t"), batch).logp
        torch.testing.assert_close(token_outputs(ref, batch).logp, base_logp, atol=1e-6, rtol=0)
        assert not torch.allclose(token_outputs(policy, batch).logp, base_logp, atol=1e-4)  # trained adapter
    assert policy.training  # the reference's forward left the policy's mode alone
    with pytest.raises(ConfigError, match="policy=model"):
        load_reference(cfg.model, "cpu", "test")

    # through RL: GRPO with beta > 0 logs kl = 0 at step 1 (the adapters start at zero)
    rl = RLConfig(model=ModelConfig(path=str(nano_checkpoint), lora=LORA), env=RLEnvConfig(name="toy", eval_episodes=4),
                  batch=RLBatchConfig(2, 4, 8, 1), sampling=RLSamplingConfig(max_new_tokens=4), beta=0.1,
                  optim=OptimConfig(lr=1e-2, schedule="constant"),
                  run=RunConfig(out_dir=str(tmp_path / "rl"), max_steps=2, progress=False, tensorboard=False,
                                log_every=1))
    final = train_rl(rl)
    rows = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl")]
    train = [r for r in rows if r["kind"] == "train"]
    assert abs(train[0]["kl"]) < 1e-7
    assert (final / "adapter_model.safetensors").exists()


def test_resume_restores_the_adapter_bit_identically(nano_checkpoint, tmp_path):
    from safetensors.torch import load_file

    full = _train_sft(dataclasses.replace(_sft_cfg(nano_checkpoint, tmp_path / "a"), run=RunConfig(
        out_dir=str(tmp_path / "a"), max_steps=4, progress=False, tensorboard=False)))[1]
    half = dataclasses.replace(_sft_cfg(nano_checkpoint, tmp_path / "b"),
                               run=RunConfig(out_dir=str(tmp_path / "b"), max_steps=2, save_every=2, progress=False,
                                             tensorboard=False))
    _train_sft(half)
    resumed = _train_sft(dataclasses.replace(half, run=dataclasses.replace(half.run, max_steps=4)),
                         resume=tmp_path / "b")[1]
    a = load_file(str(full / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    step2 = load_file(str(tmp_path / "b" / "checkpoints" / "step_000002" / "adapter_model.safetensors"))
    assert not all(torch.equal(a[k], step2[k]) for k in a)  # the resumed steps trained on


def test_missing_peft_names_the_extra(nano_checkpoint, monkeypatch):
    from postlab.trainers.common import setup_model

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'postlab\[peft\]'"):
        setup_model(ModelConfig(path=str(nano_checkpoint), lora=LORA), "cpu")


def test_config_errors_name_the_key(nano_checkpoint):
    from postlab.config import load_config
    from postlab.trainers.common import setup_model

    with pytest.raises(ConfigError, match="model.lora: LoRA adapts a pretrained checkpoint"):
        ModelConfig(preset="nano", lora=LORA)
    with pytest.raises(ConfigError, match="model.lora.r"):
        load_config(ModelConfig, overrides=["path=x", "lora.r=0"])
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        setup_model(ModelConfig(path=str(nano_checkpoint), lora=LoRAConfig(target_modules=("no_such_proj",))), "cpu")


def test_vllm_sync_pushes_merged_weights_under_the_base_names(nano_checkpoint, tmp_path):
    """The vLLM backend (a fake engine, tests/distributed) gets the adapters merged into plain Qwen2 weights."""
    from postlab.models.io import load_model
    from tests.distributed.test_vllm_backend import backend_for

    trainer, _ = _train_sft(_sft_cfg(nano_checkpoint, tmp_path / "run"))
    policy = trainer.model.eval()
    base = load_model(str(nano_checkpoint))
    backend = backend_for(base, trainer.tokenizer)
    backend.sync(policy)
    (loaded,) = backend.llm.loaded
    assert set(loaded) <= set(base.state_dict()) and not any("lora" in k for k in loaded)
    ids = torch.tensor([[3, 40, 41, 42, 50, 61, 7, 9]])
    torch.testing.assert_close(_logits(backend.llm.model, ids), _logits(policy, ids), atol=1e-5, rtol=0)
