"""LoRA through peft, for SFT and every RL-style trainer (`model.lora`, postlab.config.LoRAConfig).

    model:
      path: Qwen/Qwen2.5-1.5B
      lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear, save_merged: false}

`apply(model, cfg)` injects the adapters into the Hugging Face model itself (peft's
`get_peft_model` replaces the target Linear modules in place) and trainers keep holding that
model, not peft's `PeftModel` wrapper. Why: everything that reads `model.model`, `model.lm_head`
or `model.config` (the packed-row forward, the rollout engine, the PPO value head) works unchanged,
and only adapter parameters have requires_grad, so `make_optimizer` sees only them. The
`PeftModel` stays attached to the model (`peft_model(model)`) for what only peft does: switching
the adapters off, saving the adapter, merging.

- Reference policy: `Reference(policy)`, the policy with its adapters disabled, so the frozen
  initial policy costs no second copy of the weights.
- Saves (`postlab.models.io.save_pretrained_atomic`, checkpoints and final/):
  adapter_config.json + adapter_model.safetensors, which plain peft loads onto the base model;
  with `save_merged`, the run's final save adds the merged model in final/merged/.
- Resume: `load_adapter(model, checkpoint)` into the freshly wrapped base (model.path).
- An adapter directory given as a model (`load_model(RUN/final)`: evaluation, RL from a LoRA SFT
  run) loads its base from adapter_config.json and merges the adapter (`load_merged`).
- vLLM gets `merged_state_dict(policy)`: the base model's Hugging Face names, adapters merged.

Under torchrun the adapted model is replicated, not FSDP2-sharded (`distributed.shard` leaves
it alone): every rank holds the frozen base and the adapters' gradients are summed over ranks,
the DDP-style LoRA of TRL/accelerate. Sharding a base too large for one GPU is not built.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from postlab.config import ConfigError, LoRAConfig
from postlab.models.errors import CheckpointError
from postlab.models.forward import AUTOCAST_ATTR
from postlab.models.weights import tied_duplicates

ADAPTER = "default"  # peft's adapter name; saved directories drop it from the weight names
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_MODEL = "postlab_peft_model"  # attribute on the adapted model (a plain attribute: not a submodule)
_CFG = "postlab_lora_config"


def require_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("model.lora needs the peft package: pip install 'postlab[peft]' (or drop model.lora "
                          "to fine-tune every weight)") from None
    return peft


def apply(model, cfg: LoRAConfig, base_path: str | None = None):
    """Inject adapters into `model` in place; returns `model` (its base weights frozen, adapters trainable)."""
    peft = require_peft()
    target = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target,
                             bias="none", task_type="CAUSAL_LM")
    try:
        wrapped = peft.get_peft_model(model, config, adapter_name=ADAPTER)
    except ValueError as e:  # e.g. a target module name the architecture does not have
        raise ConfigError(f"model.lora.target_modules: {e}") from None
    if base_path is not None:  # where plain peft finds the base again: absolute for a local directory
        local = Path(base_path).expanduser()
        wrapped.peft_config[ADAPTER].base_model_name_or_path = str(local.resolve()) if local.exists() else base_path
    # Plain attributes (nn.Module registers only Module values): the PeftModel holds `model`, so
    # registering it as a submodule would make a cycle in state_dict().
    object.__setattr__(model, _PEFT_MODEL, wrapped)
    object.__setattr__(model, _CFG, cfg)
    return model


def peft_model(model):
    """The PeftModel wrapping `model`, or None when `model` has no adapters."""
    return model.__dict__.get(_PEFT_MODEL) if hasattr(model, "__dict__") else None


def is_lora(model) -> bool:
    return peft_model(model) is not None


# ----------------------------------------------------------------------------- the reference policy


class Reference:
    """The LoRA policy with its adapters off: the frozen initial policy, without a second copy of the weights.

    Called like a Hugging Face causal LM by `models.forward.token_outputs` and
    `rl_batch.packed_outputs`: the full forward (`ref(input_ids=..., ...)`) or, for padded rows,
    `ref.model(...)` then `ref.lm_head(...)`. Every call runs with no grad, in eval mode (as a loaded
    reference would), with the adapters disabled, and restores the policy's mode afterwards."""

    def __init__(self, policy):
        if not is_lora(policy):
            raise ValueError("Reference wraps a LoRA policy (postlab.models.lora.apply)")
        self.policy = policy
        self.config = policy.config
        self.model = _Disabled(self, policy.model)
        self.lm_head = _Disabled(self, policy.lm_head)

    @property
    def dtype(self):
        return self.policy.dtype

    @property
    def device(self):
        return self.policy.device

    @property
    def postlab_autocast_dtype(self):  # forward.autocast reads it: the reference computes as the policy does
        return getattr(self.policy, AUTOCAST_ATTR, None)

    def parameters(self):
        return self.policy.parameters()

    def eval(self):
        return self

    def requires_grad_(self, requires_grad: bool = False):
        return self

    @contextlib.contextmanager
    def disabled(self):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad(), peft_model(self.policy).disable_adapter():
                yield
        finally:
            self.policy.train(was_training)

    def __call__(self, *args, **kwargs):
        with self.disabled():
            return self.policy(*args, **kwargs)


class _Disabled:
    """A submodule of the policy, called with the adapters off (see Reference)."""

    def __init__(self, ref: Reference, module):
        self.ref, self.module = ref, module

    def __call__(self, *args, **kwargs):
        with self.ref.disabled():
            return self.module(*args, **kwargs)


# ----------------------------------------------------------------------------- saving and loading


def save(model, tokenizer, directory: Path, final: bool = False) -> None:
    """The adapter (peft's format) into `directory`; for a run's final save with `save_merged`, also
    the merged model and the tokenizer in `directory`/merged (the caller saves the tokenizer at the top)."""
    peft_model(model).save_pretrained(str(directory), safe_serialization=True, selected_adapters=[ADAPTER])
    cfg: LoRAConfig = model.__dict__[_CFG]
    if final and cfg.save_merged:
        merged = Path(directory) / "merged"
        merged.mkdir()
        model.save_pretrained(str(merged), state_dict=merged_state_dict(model), safe_serialization=True)
        tokenizer.save_pretrained(str(merged))


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights with the adapters merged in, under the base model's Hugging Face names (what plain
    transformers and vLLM load). `model` is not modified; tied weights appear once."""
    from peft.tuners.lora import LoraLayer

    state = dict(model.state_dict())
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or ADAPTER not in module.lora_A:
                continue
            prefix = f"{name}." if name else ""
            base = state.pop(f"{prefix}base_layer.weight")
            state[f"{prefix}weight"] = base + module.get_delta_weight(ADAPTER).to(base.dtype)
            if f"{prefix}base_layer.bias" in state:
                state[f"{prefix}bias"] = state.pop(f"{prefix}base_layer.bias")
    state = {k: v.detach() for k, v in state.items() if ".lora_" not in k}
    for name in tied_duplicates(model):
        state.pop(name, None)
    left = [k for k in state if ".base_layer." in k]
    if left:
        raise RuntimeError(f"LoRA merge: {len(left)} adapted weights were not merged (e.g. {left[0]}); "
                           "only LoRA on Linear layers is supported")
    return state


def load_adapter(model, directory: str | Path) -> None:
    """Load a saved adapter (a checkpoint's) into the adapted `model`, for resume."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{directory}: no {ADAPTER_WEIGHTS}; this checkpoint was not written by a LoRA run "
                              "(resume it without model.lora, or start a new run)")
    weights = load_file(str(path), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(peft_model(model), weights, adapter_name=ADAPTER)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise CheckpointError(f"{path}: the adapter does not match model.lora (missing {missing[:3]}, unexpected "
                              f"{list(result.unexpected_keys)[:3]}); resume with the run's own model.lora")


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists()


def load_merged(directory: Path, load_base):
    """A Hugging Face model from an adapter directory: its base (adapter_config.json's
    base_model_name_or_path, loaded with `load_base(path)`) with the adapter merged in."""
    peft = require_peft()
    try:
        base_path = json.loads((directory / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except ValueError as e:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG}: unreadable ({e})") from None
    if not base_path:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG}: no base_model_name_or_path; load the base model and "
                              f"the adapter with peft (PeftModel.from_pretrained(base, '{directory}'))")
    base = load_base(base_path)
    return peft.PeftModel.from_pretrained(base, str(directory)).merge_and_unload()
