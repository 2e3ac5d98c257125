"""One forward pass over a packed batch, returning per-target quantities only."""

from __future__ import annotations

import dataclasses

import torch

from postlab.data.batching import PackedBatch


@dataclasses.dataclass
class TokenOutputs:
    logp: torch.Tensor  # [n] log pi(target)
    logits: torch.Tensor | None = None  # [n, V] when requested (full-vocabulary KL)
    entropy: torch.Tensor | None = None  # [n] when requested (detached)
    hidden: torch.Tensor | None = None  # [1, L, H] last hidden states when requested (value heads)


def token_outputs(model, batch: PackedBatch, want_logits: bool = False, want_entropy: bool = False,
                  want_hidden: bool = False) -> TokenOutputs:
    """Log-probabilities of the trained tokens of a packed batch.

    The LM head runs only at the positions that predict a trained token (`logits_to_keep`),
    which skips the vocabulary projection for prompts and environment turns.
    """
    if batch.num_targets == 0:
        raise ValueError("batch has no trained tokens")
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                logits_to_keep=batch.target_index, output_hidden_states=want_hidden)
    logits = out.logits[0].float()  # [n, V]
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, batch.targets[:, None]).squeeze(-1) - logz
    entropy = None
    if want_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = logz - (probs * logits).sum(-1)
    return TokenOutputs(logp=logp, logits=logits if want_logits else None, entropy=entropy,
                        hidden=out.hidden_states[-1] if want_hidden else None)
