"""How a model's parameters are held: tied (one tensor under two names) or FSDP2-sharded.

Low level on purpose: the forward (postlab.models.forward), LoRA's merge (postlab.models.lora) and
the data-parallel code (postlab.distributed) all ask these questions, and postlab.distributed
itself imports LoRA, so the answers live below all three.
"""

from __future__ import annotations

import torch.distributed as dist


def is_sharded(model) -> bool:
    """True when `model` is (the root of) an FSDP2-sharded module; never on one process."""
    if model is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    from torch.distributed.fsdp import FSDPModule  # only a multi-process run pays for importing FSDP

    return isinstance(model, FSDPModule)


def tied_duplicates(model) -> list[str]:
    """Names of parameters that are the same tensor as an earlier-named one (tied weights)."""
    first: dict[int, str] = {}
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out.append(name)
        else:
            first[id(p)] = name
    return out
