"""Padding-free batching: sequences are packed end to end into one row.

Positions restart at 0 for each sequence, which makes `transformers` build a block-diagonal
causal mask (sdpa/eager/flash), so no compute is spent on padding and no sequence attends to
another. Only the positions that predict a trained token are kept for the loss
(`target_index`), so objectives see compact 1-D tensors of length n_targets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from postlab.data.records import Encoded


@dataclasses.dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [1, L]
    position_ids: torch.Tensor  # [1, L]
    target_index: torch.Tensor  # [n] positions p whose logits predict the trained token at p+1
    targets: torch.Tensor  # [n] the trained tokens
    seq_idx: torch.Tensor  # [n] which sequence of the batch each target belongs to
    seq_lengths: torch.Tensor  # [B] tokens per sequence (prompt included)
    seq_weights: torch.Tensor  # [B]
    num_seqs: int
    extras: dict = dataclasses.field(default_factory=dict)  # per-target or per-sequence tensors

    @property
    def num_targets(self) -> int:
        return int(self.targets.numel())

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device) -> PackedBatch:
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if f.name not in ("extras", "num_seqs")},
                                   extras={k: move(v) for k, v in self.extras.items()})


def pack(seqs: Sequence[Encoded]) -> PackedBatch:
    if not seqs:
        raise ValueError("cannot pack an empty list of sequences")
    ids, pos, tgt_idx, seq_idx = [], [], [], []
    offset = 0
    for s_i, s in enumerate(seqs):
        ids.extend(s.input_ids)
        pos.extend(range(len(s)))
        # Token t of sequence s is predicted by the logits at packed position offset+t-1.
        for t in range(1, len(s)):
            if s.loss_mask[t]:
                tgt_idx.append(offset + t - 1)
                seq_idx.append(s_i)
        offset += len(s)
    input_ids = torch.tensor(ids, dtype=torch.long)
    target_index = torch.tensor(tgt_idx, dtype=torch.long)
    return PackedBatch(
        input_ids=input_ids[None],
        position_ids=torch.tensor(pos, dtype=torch.long)[None],
        target_index=target_index,
        targets=input_ids[target_index + 1] if len(tgt_idx) else torch.zeros(0, dtype=torch.long),
        seq_idx=torch.tensor(seq_idx, dtype=torch.long),
        seq_lengths=torch.tensor([len(s) for s in seqs], dtype=torch.long),
        seq_weights=torch.tensor([s.weight for s in seqs], dtype=torch.float32),
        num_seqs=len(seqs),
    )


def split_micro_batches(items: Sequence, micro_batch_sequences: int) -> list[list]:
    """Consecutive chunks of at most `micro_batch_sequences` items (order preserved)."""
    if micro_batch_sequences <= 0:
        raise ValueError(f"micro_batch_sequences must be > 0, got {micro_batch_sequences}")
    return [list(items[i:i + micro_batch_sequences]) for i in range(0, len(items), micro_batch_sequences)]
