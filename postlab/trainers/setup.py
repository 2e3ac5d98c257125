"""What every trainer sets up before its first step, in one place.

A trainer is a set-up plus a step function on the shared loop (`trainers.loop.run_loop`). The
set-up that does not depend on the method lives here, in the order it must happen:

    setup_policy     process group, device, the policy (a resumed run's checkpoint, or model.path,
                     or a fresh preset), rank 0's weights on every rank, FSDP2 sharding, and the
                     frozen reference when the objective reads one;
    setup_optimizer  AdamW over the (sharded) policy plus any extra parameter groups, then the
                     resumed run's optimizer, RNG and trainer state;

plus the pieces several trainers read: `BatchConfig` (sequences per step and micro-batch),
`DataOrder` (the seeded epoch-wise order of a data set, checkpointed). No trainer imports
another trainer; what two of them share is here, in `common.py` (the update) or in
`envsection.py` (the environment section).
"""

from __future__ import annotations

import dataclasses

import torch

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.models.io import load_model, pick_device
from postlab.trainers.common import broadcast_parameters, make_optimizer, setup_model
from postlab.trainers.loop import Session


@dataclasses.dataclass
class BatchConfig:
    """Sequences per optimizer step, split into micro-batches; accumulation steps follow."""

    sequences_per_step: int = 32
    micro_batch_sequences: int = 32

    def __post_init__(self):
        if self.sequences_per_step <= 0 or self.micro_batch_sequences <= 0:
            raise ConfigError(f"batch: sequences_per_step ({self.sequences_per_step}) and micro_batch_sequences "
                              f"({self.micro_batch_sequences}) must be > 0")
        if self.micro_batch_sequences > self.sequences_per_step:
            raise ConfigError(f"batch.micro_batch_sequences ({self.micro_batch_sequences}) must be <= "
                              f"batch.sequences_per_step ({self.sequences_per_step})")

    @property
    def accumulation_steps(self) -> int:
        return -(-self.sequences_per_step // self.micro_batch_sequences)


class DataOrder:
    """Seeded epoch-wise permutation; its state (epoch, position) is saved in checkpoints."""

    def __init__(self, n: int, seed: int, shuffle: bool, epoch: int = 0, position: int = 0):
        self.n, self.seed, self.shuffle, self.epoch, self.position = n, seed, shuffle, epoch, position
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation()
            out.append(self._perm[self.position])
            self.position += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}


def load_policy(cfg_model: ModelConfig, session: Session, device, texts=None, seed: int = 0):
    """(model, tokenizer): the resume checkpoint's weights, or `cfg_model` (a checkpoint or a fresh preset).

    With model.lora, a resumed run's checkpoint holds only the adapter: the base comes from model.path
    and the adapter from the checkpoint."""
    if session.checkpoint is not None and cfg_model.lora is None:
        return setup_model(dataclasses.replace(cfg_model, path=str(session.checkpoint), preset=None), device)
    model, tok = setup_model(cfg_model, device, texts_for_tokenizer=texts, seed=seed)
    if session.checkpoint is not None:
        from postlab.models import lora

        lora.load_adapter(model, session.checkpoint)
    return model, tok


def load_reference(cfg_model: ModelConfig, device, why: str, policy=None):
    """The frozen initial policy, for objectives that read a reference: the checkpoint model.path, or,
    with model.lora, `policy` itself with its adapters disabled (`lora.Reference`: no second copy)."""
    if cfg_model.path is None:
        raise ConfigError(f"{why} needs a reference: set model.path to a checkpoint (the frozen initial policy)")
    if cfg_model.lora is not None:
        from postlab.models import lora

        if policy is None or not lora.is_lora(policy):
            raise ConfigError(f"model.lora: {why} reads a reference, which with LoRA is the policy with its adapters "
                              "disabled, and this trainer did not pass its policy (load_reference(..., policy=model))")
        return lora.Reference(policy)
    return load_frozen(cfg_model.path, cfg_model, device)  # computes as the policy does (KL 0 at step 0)


def load_frozen(path: str, cfg_model: ModelConfig, device):
    """A frozen model (reference, teacher) in the policy's dtype and autocast."""
    from postlab.models.forward import set_autocast

    model = load_model(path, dtype=cfg_model.dtype, device=device).eval().requires_grad_(False)
    set_autocast(model, cfg_model.autocast)
    return model


def load_teacher(path: str, cfg_model: ModelConfig, tokenizer, device):
    """A frozen teacher for distillation: any checkpoint (another size, another architecture) whose
    tokenizer is the student's, token for token, since it scores the student's tokens by id."""
    from pathlib import Path

    from postlab.models.io import load_tokenizer

    if not Path(path).is_dir():
        raise ConfigError(f"teacher: {path!r} is not a checkpoint directory; set teacher to a local Hugging Face "
                          "directory (e.g. a larger model trained on the task: RUN/final)")
    theirs = load_tokenizer(path).get_vocab()
    if theirs != tokenizer.get_vocab():
        raise ConfigError(f"teacher: {path} has another tokenizer ({len(theirs)} tokens vs the student's "
                          f"{len(tokenizer.get_vocab())}, or other ids); the teacher scores the student's tokens by "
                          "id, so both need the same tokenizer")
    return distributed.shard(load_frozen(path, cfg_model, device))


@dataclasses.dataclass
class Policy:
    """A trainer's model side after `setup_policy`."""

    model: torch.nn.Module  # sharded under torchrun (FSDP2), the plain model on one process
    tokenizer: object
    reference: torch.nn.Module | None  # the frozen initial policy, when asked for
    device: torch.device
    rank: int
    world_size: int


def setup_policy(cfg_model: ModelConfig, cfg_run: RunConfig, session: Session, reference: str | None = None,
                 texts: list[str] | None = None, seed: int = 0) -> Policy:
    """Join the process group, load the policy, give every rank rank 0's weights, shard, and load the
    frozen reference when `reference` says why one is needed (its words go into the error a missing
    model.path raises). `texts` and `seed` build a fresh preset's tokenizer and weights.

    Data parallel (torchrun): policy and reference are FSDP2-sharded (`distributed.shard`) after
    every rank holds rank 0's weights, and before any optimizer is built over the shards."""
    rank, world_size = distributed.init_from_env()
    device = pick_device(cfg_run.device)
    model, tok = load_policy(cfg_model, session, device, texts, seed=seed)
    broadcast_parameters(model)
    model = distributed.shard(model)
    ref = None
    if reference is not None:
        ref = distributed.shard(load_reference(cfg_model, device, reference, policy=model))
    return Policy(model, tok, ref, device, rank, world_size)


def setup_optimizer(model, cfg_optim: OptimConfig, session: Session, param_groups: list[dict] = (),
                    modules: dict | None = None) -> tuple[torch.optim.Optimizer, dict]:
    """AdamW over `model` (plus `param_groups`, e.g. a critic's head at its own lr), then the resumed
    run's optimizer, RNG and trainer state; returns (optimizer, trainer state: {} on a fresh run).
    `modules` are the extra modules the run checkpoints beside the model (`Trainer.modules`)."""
    optimizer = make_optimizer(model, cfg_optim)
    for group in param_groups:
        optimizer.add_param_group(group)
    return optimizer, session.restore(optimizer, model, modules)
