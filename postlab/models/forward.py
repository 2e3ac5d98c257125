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

from postlab.models.weights import is_sharded

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


# A packed row attends only within each sequence, but sdpa on CPU (and without flash-attention
# varlen kernels in general) computes the whole L x L block-diagonal product of the row under an
# explicit mask, and cannot skip the causal upper half. So a batch of several sequences runs as
# padded rows instead: one sequence per row, rows sorted by length, no attention mask at all (sdpa
# runs its causal kernel). Right padding is never attended to by a real token under a causal mask,
# so log-probs equal each sequence's own forward (tests/foundation/test_invariance.py). The rows
# are cut into chunks, one model call each, where that is cheaper than padding everything to the
# longest (`length_chunks`): each call has a fixed cost, worth CALL_TOKENS tokens of compute
# (measured on 2 CPU threads: ~5 ms per call of the 0.63M lab model, ~50 tokens; GPUs launch
# kernels per op, so a call there is worth far more tokens and batches stay whole). Measured
# (docs/benchmarks.md): a 512-episode RL update 20.7 -> 12.3 s (micro-batches of 8), SFT
# micro-batches of similar lengths 1.25x faster, pre-training batches of very mixed short texts as
# fast as before.
CALL_TOKENS = {"cpu": 64, "default": 2048}
CHUNK_TOKENS = 16384  # padded tokens per model call at most (bounds the activations of one call)


def forward_costs(config) -> tuple[float, float]:
    """(multiply-adds per token, per attended pair) of one decoder layer of a transformers config:
    the token's projections and MLP, and 4 * hidden for the pair's score and value."""
    h = config.hidden_size
    kv = config.num_key_value_heads * (getattr(config, "head_dim", None) or h // config.num_attention_heads)
    return float(h * (2 * h + 2 * kv) + 3 * h * config.intermediate_size), float(4 * h)


def outputs_from_logits(logits: torch.Tensor, targets: torch.Tensor, want_logits: bool = False,
                        want_entropy: bool | str = False, hidden: torch.Tensor | None = None) -> TokenOutputs:
    """Per-target log-probs (and optionally logits, entropy) from [n, V] logits. The entropy is detached (a
    metric) unless `want_entropy == "grad"` (an entropy bonus in the loss)."""
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    entropy = None
    if want_entropy:
        with torch.set_grad_enabled(want_entropy == "grad" and torch.is_grad_enabled()):
            entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return TokenOutputs(logp=logp, logits=logits if want_logits else None, entropy=entropy, hidden=hidden)


def padded_path_blocked(model) -> bool:
    """True when the model does not expose the (decoder, lm_head) split the padded layout needs.

    Also for an FSDP2-sharded model: the padded layout calls `model.model` and `model.lm_head`
    directly, which skips the root's all-gather (the root unit owns the embeddings and the head),
    so it runs the whole packed forward instead (same log-probs: tests/foundation/test_invariance)."""
    return is_sharded(model) or getattr(model, "lm_head", None) is None or getattr(model, "model", None) is None \
        or getattr(model.config, "final_logit_softcapping", None) is not None


def length_chunks(seq_lengths: list[int], per_token: float, per_pair: float, call_tokens: float,
                  max_tokens: int | None = None) -> list[list[int]]:
    """Sequence indices, longest first, cut into chunks (one model call each, every row padded to the
    chunk's longest) that minimise the estimated cost: rows x width x per_token + rows x width^2 / 2
    x per_pair (causal attention) per chunk, plus call_tokens x per_token per call. A chunk holds at
    most `max_tokens` padded tokens unless it is one row. Exact over contiguous cuts of the sorted
    lengths (dynamic programming, O(n^2) for n sequences)."""
    max_tokens = CHUNK_TOKENS if max_tokens is None else max_tokens
    order = sorted(range(len(seq_lengths)), key=lambda i: -seq_lengths[i])
    lengths = [seq_lengths[i] for i in order]
    n = len(lengths)
    call = call_tokens * per_token
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cut of the j longest sequences
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):  # chunk = sorted positions i..j-1, width lengths[i]
            rows, width = j - i, lengths[i]
            if rows > 1 and rows * width > max_tokens:
                break  # wider chunks only grow (i decreases: more rows, a wider head)
            cost = best[i] + rows * width * per_token + rows * width * width / 2 * per_pair + call
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


def _padded_token_outputs(model, batch: PackedBatch, want_logits: bool, want_entropy: bool | str,
                          want_hidden: bool) -> TokenOutputs:
    lengths = batch.seq_lengths.tolist()
    device = batch.input_ids.device
    pad = model.config.pad_token_id if getattr(model.config, "pad_token_id", None) is not None else 0
    offsets = [0]
    for n in lengths[:-1]:
        offsets.append(offsets[-1] + n)
    src = batch.input_ids[0]
    base = [0] * len(lengths)  # where each sequence's first token lands in the concatenated hidden states
    hidden, flat = [], 0
    per_token, per_pair = forward_costs(model.config)
    call_tokens = CALL_TOKENS.get(device.type, CALL_TOKENS["default"])
    for chunk in length_chunks(lengths, per_token, per_pair, call_tokens):
        width = lengths[chunk[0]]
        ids = torch.full((len(chunk), width), int(pad), dtype=torch.long, device=device)
        for r, i in enumerate(chunk):
            ids[r, :lengths[i]] = src[offsets[i]:offsets[i] + lengths[i]]
            base[i] = flat + r * width
        # no mask, default positions: sdpa's causal kernel
        h = model.model(input_ids=ids, use_cache=False).last_hidden_state
        hidden.append(h.reshape(-1, h.shape[-1]))
        flat += len(chunk) * width
    shift = torch.tensor([base[i] - offsets[i] for i in range(len(lengths))], device=device)
    index = batch.target_index + shift[batch.seq_idx]
    hidden = torch.cat(hidden)
    logits = model.lm_head(hidden[index])  # [n, V]: the head only where a token is trained
    packed_hidden = None
    if want_hidden:  # back in the packed layout [1, L, H] (value heads index packed positions)
        where = torch.cat([torch.arange(n, device=device) + base[i] for i, n in enumerate(lengths)])
        packed_hidden = hidden[where][None].float()
    return outputs_from_logits(logits, batch.targets, want_logits, want_entropy, hidden=packed_hidden)


def token_outputs(model, batch: PackedBatch, want_logits: bool = False, want_entropy: bool | str = False,
                  want_hidden: bool = False) -> TokenOutputs:
    """Log-probabilities of the trained tokens of a packed batch.

    The LM head runs only at the positions that predict a trained token (`logits_to_keep`),
    which skips the vocabulary projection for prompts and environment turns.
    """
    if batch.num_targets == 0:
        raise ValueError("batch has no trained tokens")
    with autocast(model):
        if batch.num_seqs > 1 and not padded_path_blocked(model):
            return _padded_token_outputs(model, batch, want_logits, want_entropy, want_hidden)
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                    logits_to_keep=batch.target_index, output_hidden_states=want_hidden)
        return outputs_from_logits(out.logits[0], batch.targets, want_logits, want_entropy,
                                   hidden=out.hidden_states[-1].float() if want_hidden else None)
