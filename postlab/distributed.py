"""The one place torch.distributed is set up, and every data-parallel piece that depends on it.

    torchrun --nproc_per_node 8 -m postlab.cli.main train rl configs/paper/chu-gp-rl.yaml

`init_from_env()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK and starts the process group
(NCCL on CUDA, each process on GPU LOCAL_RANK; gloo on CPU). The CLI calls it before a command
runs when WORLD_SIZE > 1; trainer set-ups call it too (idempotent), so the same code works when
training is started from Python under torchrun.

Data parallelism is FSDP2 (`torch.distributed.fsdp.fully_shard`): `shard(model)` wraps every
decoder layer (the classes the model lists in `_no_split_modules`) and then the root, and makes
the gradient reduction a SUM over ranks. Why a sum: every loss in postlab is reduced by
`aggregate` with the step's GLOBAL counts (`step_normalizer` all-reduces them), so each rank's
gradient is already its share of the step's gradient, and the step's gradient is their sum.
FSDP2's default is the mean (the DDP convention), which would divide the step by world_size.
On gloo, FSDP2's custom divide factor needs `ReduceOp.PREMUL_SUM`, which gloo lacks
("Cannot use ReduceOp.PREMUL_SUM with Gloo"); `set_force_sum_reduction_for_comms(True)` makes
it a plain SUM with a separate scaling, which works on both NCCL and gloo.

Inference on a sharded model (rollouts with the local engine, evaluation) runs inside
`gathered(model)`: every rank all-gathers the full weights once and keeps them until the block
ends, so forwards are rank-local (ranks may generate different numbers of tokens, and
evaluation may run on rank 0 alone) and the local engine's fast path, which calls the model's
modules directly, sees ordinary tensors. Training forwards are collectives: every rank must run
the same number of them (`accumulate_gradients` pads with zero-weight repeats).

Checkpoints of a sharded run go through torch distributed checkpointing (`save_sharded` /
`load_sharded`: each rank writes its shard of model and optimizer); the Hugging Face copy in the
same checkpoint directory is written by rank 0 from `full_state_dict` so plain transformers
still loads every checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from postlab.models.weights import is_sharded, tied_duplicates


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that logs and writes run files (rank 0)."""
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def backend() -> str | None:
    """The process group's backend ('nccl', 'gloo'), or None on one process."""
    return dist.get_backend() if world()[1] > 1 else None


def init_from_env(timeout_s: int = 1800) -> tuple[int, int]:
    """Start the process group from torchrun's environment when WORLD_SIZE > 1; returns (rank, world_size).

    Idempotent: a second call (the CLI, then a trainer set-up) returns the running group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run on one process "
                           "(plain `postlab`, not torchrun) or install a torch build with distributed support")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: start multi-process runs with "
                           "`torchrun --nproc_per_node N -m postlab.cli.main ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # before the group: NCCL binds each process to its GPU
        dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    if dist.get_rank() != 0:  # rank 0 alone prints progress, summaries and set-up lines
        from postlab.progress import console

        console.quiet = True
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another is still in a collective
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where small tensors for collectives live: the process's GPU under NCCL, else the CPU."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- small collectives


def all_reduce_sum(values: list[float], device=None) -> list[float]:
    """Sum numbers over data-parallel ranks (identity on one process). float64: counts stay exact."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device() if device is None else device)
    if backend() == "nccl" and t.device.type != "cuda":
        t = t.to(collective_device())
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: int) -> int:
    if world()[1] == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] (pickled; for small per-step statistics only)."""
    if world()[1] == 1:
        return [obj]
    out: list = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- FSDP2


def _fsdp():
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    return FSDPModule, MixedPrecisionPolicy, fully_shard


def _fsdp_modules(model) -> list:
    FSDPModule, _, _ = _fsdp()
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _layer_classes(model) -> set[str]:
    """Decoder-layer class names: Hugging Face models list them in `_no_split_modules`."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def shard(model, param_dtype: torch.dtype | None = None):
    """FSDP2-shard `model` over all ranks (identity on one process); gradients reduce as a SUM.

    One FSDP unit per decoder layer, then the root (embeddings, final norm, LM head: tied
    embeddings stay in one unit). `param_dtype` (e.g. bfloat16): compute in that dtype while
    the sharded master weights and the gradient reduction stay in the weights' dtype.
    Frozen modules (a reference policy) are sharded the same way; they have no gradients.

    A LoRA model (postlab.models.lora) is not sharded: its frozen base is replicated on every
    rank and only the adapters train, whose gradients `all_reduce_gradients` sums (the
    DDP-style LoRA of TRL/accelerate). The adapters' optimizer state, the memory LoRA saves,
    is small, and the adapter saves, the adapter-disabled reference and the vLLM merge all stay
    the single-process code."""
    if world()[1] == 1:
        return model
    from postlab.models.lora import Reference, is_lora

    if is_lora(model) or isinstance(model, Reference):  # the reference is the same replicated policy
        return model
    _, MixedPrecisionPolicy, fully_shard = _fsdp()
    kwargs = {}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    layers = _layer_classes(model)
    for m in list(model.modules()):
        if m is not model and type(m).__name__ in layers:
            fully_shard(m, **kwargs)
    fully_shard(model, **kwargs)
    for m in _fsdp_modules(model):
        m.set_gradient_divide_factor(1.0)  # a sum over ranks, not FSDP's default mean (module doc)
        m.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    return model


@contextlib.contextmanager
def gathered(model) -> Iterator[None]:
    """Full weights on every rank for the block (a collective: every rank enters it).

    Inside, forwards are rank-local (no all-gather per forward, no reshard after it), so ranks
    may run different numbers of them: sampling until each row stops, evaluation on rank 0 only.
    No-op for a model that is not sharded."""
    if not is_sharded(model):
        yield
        return
    mods = _fsdp_modules(model)
    for m in mods:
        m.unshard()
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        barrier()  # no rank reshards (and frees) while another still reads the gathered weights
        model.set_reshard_after_forward(True)
        for m in mods:
            m.reshard()


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict on rank 0, on the CPU; {} on other ranks.

    A collective for a sharded model: every rank calls it. For an unsharded model, its own
    state dict (the tensors themselves, not copies)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    for name in tied_duplicates(model):  # tied weights once, as transformers writes them (the LM head
        full.pop(name, None)              # tied to the embeddings is re-tied at load time)
    return full


def full_state_dict_all_ranks(model) -> dict[str, torch.Tensor]:
    """Like `full_state_dict`, but every rank gets the full tensors on their device (rollout engines
    that hold their own weights, one per rank)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


@contextlib.contextmanager
def plain_class(model) -> Iterator[object]:
    """`model` presented as its original class, for `save_pretrained`.

    FSDP2 swaps a wrapped module's class for a generated subclass `FSDP<Name>`, and transformers
    records `type(model).__name__` as `config.architectures`; the checkpoint would then name a
    class that does not exist. Only metadata is read while the class is swapped back (the
    weights come from the gathered state dict), so no FSDP hook is bypassed."""
    FSDPModule, _, _ = _fsdp()
    cls = type(model)
    if not isinstance(model, FSDPModule):
        yield model
        return
    orig = next(b for b in cls.__bases__ if b is not FSDPModule)
    model.__class__ = orig
    try:
        yield model
    finally:
        model.__class__ = cls


def clip_grad_norm(params: list, max_norm: float | None) -> float:
    """Global gradient norm (clipped to `max_norm` unless None) of plain or sharded (DTensor) gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
    else:
        norm = torch.nn.utils.get_total_norm(grads)
    if hasattr(norm, "full_tensor"):  # DTensor: the norm of the sharded gradients, reduced over ranks
        norm = norm.full_tensor()
    return float(norm)


# ----------------------------------------------------------------------------- distributed checkpoints

SHARDED_DIR = "dcp"  # inside a checkpoint directory: torch.distributed.checkpoint files, one per rank


def _holder(model, modules: dict | None):
    """What DCP reads: the model, or the model with the other modules the optimizer trains (DCP
    names optimizer state by parameter name, so every optimized parameter must be in one module)."""
    if not modules:
        return model
    return torch.nn.ModuleDict({"policy": model, **modules})


def _state(holder, optimizer):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(holder, optimizer)
    return {"model": msd, "optim": osd}


def save_sharded(path: Path, model, optimizer, modules: dict | None = None) -> None:
    """Each rank writes its shard of the model and optimizer state under `path` (a collective).
    `modules`: other modules whose parameters `optimizer` holds (e.g. PPO's value head)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(_holder(model, modules), optimizer), checkpoint_id=str(path))


def load_sharded(path: Path, model, optimizer, modules: dict | None = None) -> None:
    """Load `save_sharded`'s files into the (sharded) model and optimizer (and `modules`, as saved);
    resharding to another world size is DCP's."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    holder = _holder(model, modules)
    state = _state(holder, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(holder, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
