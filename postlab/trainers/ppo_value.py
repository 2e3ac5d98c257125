"""PPO's critic: a linear value head on the policy's last hidden state (Chu et al. 2025).

V(s_k) is read at the last token of the context before turn k (the "last prompt token"
of that turn), so a multi-turn episode has one value per turn, and GAE runs over turn-level
rewards. Every trained token of turn k carries V(s_k), its GAE advantage and return; the
value loss is therefore weighted by turn length under token-mean aggregation.

The head is saved beside the Hugging Face checkpoint as `value_head.safetensors`, so the
checkpoint itself stays a plain causal LM.
"""

from __future__ import annotations

from pathlib import Path

import torch

from postlab.data.batching import PackedBatch

VALUE_FILE = "value_head.safetensors"


class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.proj.weight)  # start at V = 0: early advantages are the plain returns
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.float()).squeeze(-1)


def value_fn_for(head: ValueHead):
    """The `value_fn(hidden, batch)` hook of `trainers.common.loss_inputs`: per-target V(s_turn)."""

    def value_fn(hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        return head(hidden[0, batch.extras["value_index"]])

    return value_fn


def save_value_head(head: ValueHead, directory: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(Path(directory) / VALUE_FILE))


def load_value_head(head: ValueHead, directory: Path) -> None:
    from safetensors.torch import load_file

    path = Path(directory) / VALUE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no value head in this checkpoint (was it written by a PPO run?)")
    head.load_state_dict(load_file(str(path)))
