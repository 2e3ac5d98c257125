"""Rollout backends: who samples the episodes. One small protocol, two implementations.

`generate(model, tokenizer, prompts, params, backend=None)` (postlab.rollout.engine) samples with
the local engine from `model` itself when `backend` is None, and otherwise calls
`backend.generate(prompts, params)`. A backend that holds its own copy of the weights (vLLM) must
be given the policy after every update (`backend.sync(policy)`), before the next rollout.

    rollout.backend: local   # postlab's engine on the policy itself (default; lab scale, CPU)
    rollout.backend: vllm    # postlab.rollout.vllm_backend.VLLMBackend (paper scale, GPUs)
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

from postlab.config import ConfigError
from postlab.rollout.engine import Completion, SamplingParams


class RolloutBackend(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def sync(self, policy) -> None: ...


@dataclasses.dataclass
class RolloutConfig:
    """`rollout:` section of a trainer config."""

    backend: Literal["local", "vllm"] = "local"
    gpu_memory_utilization: float = 0.3  # vllm: share of the GPU for its weights + KV cache (the rest trains)
    sleep: bool = True  # vllm: free the engine's GPU memory during the update (sleep mode)
    max_model_len: int | None = None  # vllm: context length (None: the model's)

    def __post_init__(self):
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"rollout.gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")


def make_backend(cfg: RolloutConfig, model_path: str | None, dtype: str = "bfloat16", seed: int = 0):
    """None for the local engine, or a vLLM backend serving `model_path` (the policy's start)."""
    if cfg.backend == "local":
        return None
    if model_path is None:
        raise ConfigError("rollout.backend: vllm serves a checkpoint; set model.path")
    from postlab.rollout.vllm_backend import VLLMBackend

    try:
        return VLLMBackend.create(model_path, dtype=dtype, seed=seed, gpu_memory_utilization=cfg.gpu_memory_utilization,
                                  max_model_len=cfg.max_model_len, sleep=cfg.sleep)
    except ImportError as e:
        raise ConfigError(f"rollout.backend: vllm: {e}; or set rollout.backend: local") from None


def backend_for_run(rollout: RolloutConfig, model_cfg, session, seed: int):
    """(backend or None, needs_push) of a trainer run: the engine starts from where the policy starts,
    the resumed checkpoint or `model.path`. A LoRA run's checkpoint holds only the adapter, so its
    engine starts from the base and `needs_push` says the merged weights must be pushed before the
    first rollout (`backend.sync(policy)`)."""
    lora_resume = model_cfg.lora is not None and session.checkpoint is not None
    start = str(session.checkpoint) if session.checkpoint is not None and not lora_resume else model_cfg.path
    backend = make_backend(rollout, start, dtype=model_cfg.dtype, seed=seed)
    return backend, backend is not None and lora_resume


def config_only_model(path: str):
    """What episodes read of a model when an external engine samples (its config: context length; its
    generation config: end-of-turn tokens), without loading a second copy of the weights."""
    import types

    from transformers import AutoConfig, GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(path)
    except OSError:  # a checkpoint without generation_config.json
        generation = None
    return types.SimpleNamespace(config=AutoConfig.from_pretrained(path), generation_config=generation)
