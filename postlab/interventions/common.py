"""What the diagnostics and Rejuvenation share: errors, where the units live in a decoder,
calibration prompts from an environment, and one teacher-forced pass over them.

Models are Hugging Face decoders with the Qwen2/Llama layout::

    model.model.layers[i].self_attn.{q,k,v,o}_proj   model.model.layers[i].mlp.{gate,up,down}_proj
    model.model.norm (final RMSNorm)                 model.lm_head

Calibration sequences are the environment's prompts (rendered with the tokenizer's chat
template) followed by the expert's first answer, teacher-forced: every statistic is taken at
the positions that predict an expert response token (the SFT loss positions).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import torch

from postlab.config import ConfigError
from postlab.data.batching import PackedBatch, pack, split_micro_batches
from postlab.data.records import Encoded, encode_all

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
# A unit of a row module is one output row (plus its bias entry); of a column module one input column.
ROW_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
COLUMN_PROJECTIONS = ("o_proj", "down_proj")
MLP_NEURON = "mlp"  # the unit name of a whole MLP neuron: gate row i + up row i + down column i


class InterventionError(ConfigError):
    """Bad input to a diagnostic or an intervention; the message says which value and what to do."""


# ----------------------------------------------------------------------------- model layout


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise InterventionError(f"{type(model).__name__}: interventions need the Qwen2/Llama layout "
                                "(model.model.layers[i].self_attn / .mlp); this architecture is not supported")
    return layers


def projection(model, layer: int, module: str) -> torch.nn.Linear:
    """The Linear `module` (e.g. "k_proj") of decoder layer `layer`."""
    block = decoder_layers(model)[layer]
    parent = getattr(block, "self_attn" if module in ATTENTION_PROJECTIONS else "mlp", None)
    linear = getattr(parent, module, None)
    if not isinstance(linear, torch.nn.Linear):
        raise InterventionError(f"{type(model).__name__}: layer {layer} has no Linear {module!r}; interventions "
                                f"need {', '.join(PROJECTIONS)} (Qwen2/Llama layout)")
    return linear


def final_norm(model) -> torch.nn.Module:
    """The final RMSNorm; direct-logit attribution freezes its per-position scale."""
    norm = getattr(getattr(model, "model", None), "norm", None)
    if norm is None or not hasattr(norm, "weight") or norm_epsilon(norm) is None:
        raise InterventionError(f"{type(model).__name__}: no final RMSNorm at model.model.norm "
                                "(needed for direct-logit attribution)")
    if getattr(model, "lm_head", None) is None or getattr(model.config, "final_logit_softcapping", None):
        raise InterventionError(f"{type(model).__name__}: direct-logit attribution needs a plain linear lm_head "
                                "(no logit soft-capping)")
    return norm


def norm_epsilon(norm) -> float | None:
    for name in ("variance_epsilon", "eps"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    return None


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_of(param_name: str) -> int | None:
    """Decoder layer index of a parameter name, None for embeddings, final norm and head."""
    match = _LAYER.search(param_name)
    return int(match.group(1)) if match else None


def module_type(param_name: str) -> str:
    """'model.layers.3.self_attn.k_proj.bias' -> 'k_proj'; 'model.norm.weight' -> 'norm'."""
    parts = param_name.split(".")
    return parts[-2] if len(parts) >= 2 and parts[-1] in ("weight", "bias") else parts[-1]


def load_checkpoint(path, what: str, dtype: str = "float32", device="cpu", attn_implementation: str = "sdpa"):
    """A model from a local directory (or a Hub id); errors start with `what` (e.g. "--base")."""
    from pathlib import Path

    from postlab.models.io import CheckpointError, load_model

    text = str(path)
    if not Path(text).exists() and (text.startswith((".", "/")) or text.count("/") != 1):
        raise InterventionError(f"{what} {text}: no such checkpoint directory")
    try:
        return load_model(text, dtype=dtype, attn_implementation=attn_implementation, device=device)
    except OSError as e:
        raise CheckpointError(f"{what} {text}: cannot load the model ({e})") from None


# ----------------------------------------------------------------------------- calibration data


def env_splits(env: str, splits: Sequence[str] | None) -> list[str]:
    """The requested splits, or the environment's first split (its in-distribution one)."""
    from postlab.envs.base import env_class

    try:
        valid = env_class(env).splits  # a registered name or an import path ('mypkg.myenv:MyEnv')
    except ValueError as e:  # names the valid environments with a did-you-mean hint
        raise InterventionError(f"--env: {e}") from None
    chosen = list(splits) if splits else [valid[0]]
    bad = [s for s in chosen if s not in valid]
    if bad:
        raise InterventionError(f"--split: {env} has no split {bad[0]!r}; valid: {', '.join(valid)}")
    return chosen


def calibration_records(env: str, splits: Sequence[str], n: int, seed_of: Callable[[int], int],
                        style: str = "compact", env_args: dict | None = None) -> list[dict]:
    """`n` prompts per split with the expert's first answer: {"messages", "meta": {split, seed}}.

    Only the first assistant turn is used (the answer to the initial prompt), which is what a
    single-turn RL step sees and what every environment's `expert()` can give right after reset.
    """
    from postlab.envs import make

    if n < 1:
        raise InterventionError(f"--n: need at least 1 prompt per split, got {n}")
    records = []
    for split in splits:
        try:
            env_obj = make(env, split=split, style=style, **(env_args or {}))
        except ValueError as e:
            raise InterventionError(str(e)) from None
        for i in range(n):
            seed = seed_of(i)
            obs = env_obj.reset(seed)
            answer = env_obj.expert()
            messages = [{"role": m["role"], "content": m["content"]} for m in obs.messages]
            records.append({"messages": messages + [{"role": "assistant", "content": answer}],
                            "meta": {"split": split, "seed": seed}})
    return records


@dataclasses.dataclass
class Calibration:
    """Encoded calibration sequences, cut into packed micro-batches once for every pass."""

    records: list[dict]
    encoded: list[Encoded]
    batches: list[PackedBatch]
    target_split: list[str]  # split of each target position, in target order

    @property
    def num_targets(self) -> int:
        return sum(b.num_targets for b in self.batches)

    def batch_offsets(self) -> list[int]:
        """Index of each micro-batch's first target in the global target order."""
        offsets, total = [], 0
        for b in self.batches:
            offsets.append(total)
            total += b.num_targets
        return offsets


def build_calibration(tokenizer, records: list[dict], micro_batch: int = 8, max_length: int | None = None) -> Calibration:
    if micro_batch < 1:
        raise InterventionError(f"micro_batch must be >= 1, got {micro_batch}")
    encoded = encode_all(tokenizer, records, max_length)
    batches = [pack(chunk) for chunk in split_micro_batches(encoded, micro_batch)]
    target_split = [r["meta"]["split"] for r, e in zip(records, encoded) for m in e.loss_mask[1:] if m]
    return Calibration(records, encoded, batches, target_split)


# ----------------------------------------------------------------------------- teacher-forced pass


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def last_hidden(model, batch: PackedBatch) -> torch.Tensor:
    """[1, L, H] final hidden states (after the final norm) of a packed batch."""
    return model.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).last_hidden_state


def distribution_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per position: entropy (nats) and max probability of the next-token distribution, and
    the log-probability of the teacher-forced target."""
    logits = logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)
    probs = logp_all.exp()
    return {"entropy": -(probs * logp_all).sum(-1), "max_prob": probs.max(-1).values,
            "logp": logp_all.gather(-1, targets[:, None]).squeeze(-1)}


@dataclasses.dataclass
class TeacherForced:
    """Per-target statistics of one model on a calibration set, in global target order."""

    entropy: torch.Tensor  # [n]
    max_prob: torch.Tensor  # [n]
    logp: torch.Tensor  # [n]
    features: torch.Tensor | None = None  # [n, H] final hidden states at those positions


@torch.no_grad()
def teacher_forced(model, calibration: Calibration, want_features: bool = False) -> TeacherForced:
    device = model_device(model)
    parts: dict[str, list[torch.Tensor]] = {"entropy": [], "max_prob": [], "logp": [], "features": []}
    for batch in calibration.batches:
        batch = batch.to(device)
        hidden = last_hidden(model, batch)[0, batch.target_index]
        stats = distribution_stats(model.lm_head(hidden), batch.targets)
        for key, value in stats.items():
            parts[key].append(value.cpu())
        if want_features:
            parts["features"].append(hidden.float().cpu())
    cat = {k: torch.cat(v) if v else None for k, v in parts.items()}
    return TeacherForced(cat["entropy"], cat["max_prob"], cat["logp"], cat["features"])


def entropy_gap(entropy_a: torch.Tensor, entropy_b: torch.Tensor) -> torch.Tensor:
    """|H_a(t) - H_b(t)| per teacher-forced position (both models read the same tokens)."""
    if entropy_a.shape != entropy_b.shape:
        raise InterventionError(f"entropy gap: {entropy_a.numel()} vs {entropy_b.numel()} positions; both models "
                                "must be teacher-forced on the same calibration set with the same tokenizer")
    return (entropy_a - entropy_b).abs()


def top_indices(values: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the `n` largest values, largest first; ties keep the earlier position (stable)."""
    order = torch.argsort(values, descending=True, stable=True)
    return order[: max(0, min(n, values.numel()))]


def describe_positions(calibration: Calibration, tokenizer, indices: torch.Tensor,
                       columns: dict[str, torch.Tensor]) -> list[dict]:
    """One row per chosen target: its sequence, split, token and the given per-target values."""
    where = []  # (sequence, token position) of each target, in target order
    for s, e in enumerate(calibration.encoded):
        where += [(s, t) for t in range(1, len(e)) if e.loss_mask[t]]
    rows = []
    for i in indices.tolist():
        seq, pos = where[i]
        token_id = calibration.encoded[seq].input_ids[pos]
        rows.append({"target": i, "sequence": seq, "split": calibration.target_split[i], "token_position": pos,
                     "token": tokenizer.decode([token_id]),
                     **{k: round(float(v[i]), 6) for k, v in columns.items()}})
    return rows
