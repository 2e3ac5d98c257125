"""One forward pass over a packed batch, returning per-target quantities only.

Mixed precision lives here too: `set_autocast(model, "bfloat16")` (done by `setup_model` for
`model.autocast`) makes every forward that goes through `token_outputs` / `rl_batch.packed_outputs`
(training, reference, held-out loss) run under `torch.autocast`, while the weights stay float32
(the optimizer's master copy). Log-probabilities are always computed in float32. Sampling (the
rollout engine) runs in the weights' dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

AUTOCAST_ATTR = "postlab_autocast_dtype"  # set on the model object; never saved in config.json
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def set_autocast(model, dtype: str | None) -> None:
    """Run `model`'s forwards under torch.autocast(dtype) (None: no autocast, the forward as written)."""
    setattr(model, AUTOCAST_ATTR, None if dtype is None else _AUTOCAST_DTYPES[dtype])


def autocast(model):
    """The autocast context for a forward of `model`: a no-op unless `set_autocast` chose a dtype."""
    dtype = getattr(model, AUTOCAST_ATTR, None)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype)

from postlab.data.batching import PackedBatch


@dataclasses.dataclass
class TokenOutputs:
    logp: torch.Tensor  # [n] log pi(target)
    logits: torch.Tensor | None = None  # [n, V] when requested (full-vocabulary KL)
    entropy: torch.Tensor | None = None  # [n] when requested (detached)
    hidden: torch.Tensor | None = None  # [1, L, H] last hidden states when requested (value heads)


# Packed sequences attend only within themselves, but sdpa on CPU (and without flash-attention
# varlen kernels in general) still computes the whole L x L block-diagonal product of a packed
# row: with 32 sequences in one row, ~97% of the attention work is masked out. Long packed
# batches are therefore laid out as several rows of ROW_TOKENS (first-fit decreasing, whole
# sequences per row, a little padding at row ends), which makes attention cost O(L * W).
ROW_TOKENS = 256


def outputs_from_logits(logits: torch.Tensor, targets: torch.Tensor, want_logits: bool = False,
                        want_entropy: bool = False, hidden: torch.Tensor | None = None) -> TokenOutputs:
    """Per-target log-probs (and optionally logits, detached entropy) from [n, V] logits."""
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    entropy = None
    if want_entropy:
        with torch.no_grad():
            entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return TokenOutputs(logp=logp, logits=logits if want_logits else None, entropy=entropy, hidden=hidden)


def row_width(batch: PackedBatch) -> int:
    return max(ROW_TOKENS, int(batch.seq_lengths.max()))


def want_logits_only_path_blocked(model) -> bool:
    """True when the model does not expose the (decoder, lm_head) split the row layout needs.

    Also for an FSDP2-sharded model: the row layout calls `model.model` and `model.lm_head`
    directly, which skips the root's all-gather (the root unit owns the embeddings and the head),
    so it runs the whole forward instead (same log-probs: tests/foundation/test_invariance)."""
    from postlab.distributed import is_sharded

    return is_sharded(model) or getattr(model, "lm_head", None) is None or getattr(model, "model", None) is None \
        or getattr(model.config, "final_logit_softcapping", None) is not None


def row_layout(seq_lengths: list[int], width: int) -> tuple[list[int], list[int], int]:
    """First-fit decreasing: (row of each sequence, column where it starts, number of rows)."""
    order = sorted(range(len(seq_lengths)), key=lambda i: -seq_lengths[i])
    free: list[int] = []
    row, col = [0] * len(seq_lengths), [0] * len(seq_lengths)
    for i in order:
        n = seq_lengths[i]
        for r, f in enumerate(free):
            if f >= n:
                row[i], col[i] = r, width - f
                free[r] -= n
                break
        else:
            row[i], col[i] = len(free), 0
            free.append(width - n)
    return row, col, len(free)


def _rows_token_outputs(model, batch: PackedBatch, want_logits: bool, want_entropy: bool) -> TokenOutputs:
    lengths = batch.seq_lengths.tolist()
    width = row_width(batch)
    row, col, n_rows = row_layout(lengths, width)
    device = batch.input_ids.device
    pad = model.config.pad_token_id if getattr(model.config, "pad_token_id", None) is not None else 0
    ids = torch.full((n_rows, width), int(pad), dtype=torch.long, device=device)
    # Padding gets positions 0.. of its own, so it forms a separate (ignored) packed segment.
    pos = torch.arange(width, device=device).repeat(n_rows, 1)
    offsets = [0]
    for n in lengths[:-1]:
        offsets.append(offsets[-1] + n)
    flat_ids, flat_pos = ids.view(-1), pos.view(-1)
    src = batch.input_ids[0]
    for i, n in enumerate(lengths):
        start = row[i] * width + col[i]
        flat_ids[start:start + n] = src[offsets[i]:offsets[i] + n]
        flat_pos[start:start + n] = torch.arange(n, device=device)
    ends = [row[i] * width + col[i] + lengths[i] for i in range(len(lengths))]
    for r in range(n_rows):  # padding after the last sequence of each row restarts at 0
        used = max([e for i, e in enumerate(ends) if row[i] == r])
        if used < (r + 1) * width:
            flat_pos[used:(r + 1) * width] = torch.arange((r + 1) * width - used, device=device)
    shift = torch.tensor([row[i] * width + col[i] - offsets[i] for i in range(len(lengths))], device=device)
    index = batch.target_index + shift[batch.seq_idx]
    hidden = model.model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
    logits = model.lm_head(hidden.reshape(-1, hidden.shape[-1])[index])  # [n, V]
    return outputs_from_logits(logits, batch.targets, want_logits, want_entropy)


def token_outputs(model, batch: PackedBatch, want_logits: bool = False, want_entropy: bool = False,
                  want_hidden: bool = False) -> TokenOutputs:
    """Log-probabilities of the trained tokens of a packed batch.

    The LM head runs only at the positions that predict a trained token (`logits_to_keep`),
    which skips the vocabulary projection for prompts and environment turns.
    """
    if batch.num_targets == 0:
        raise ValueError("batch has no trained tokens")
    with autocast(model):
        if not want_hidden and not want_logits_only_path_blocked(model) and batch.num_tokens > 2 * row_width(batch):
            return _rows_token_outputs(model, batch, want_logits, want_entropy)
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                    logits_to_keep=batch.target_index, output_hidden_states=want_hidden)
        return outputs_from_logits(out.logits[0], batch.targets, want_logits, want_entropy,
                                   hidden=out.hidden_states[-1].float() if want_hidden else None)
