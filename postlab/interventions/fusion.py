"""Base-anchored model fusion: theta_F = alpha * theta_SFT + (1 - alpha) * theta_base.

As a third-party reading reports the paper (Liu et al., arXiv 2606.09932): on ALL parameters
(embeddings, norms and lm_head included), alpha swept 0.40-0.60, default 0.5. Per-module
overrides (`{"embed_tokens": 1.0}`: keep the SFT embeddings) are postlab's option: a key applies
to every parameter whose name contains it; when several keys match, the longest one wins.

alpha = 1 returns the SFT weights and alpha = 0 the base weights bit for bit (copied, not
computed), so the two ends of a sweep are exactly the two input models.
"""

from __future__ import annotations

import copy

import torch

from postlab.interventions.common import InterventionError, module_type


def check_unit_interval(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InterventionError(f"{name} must be in [0, 1], got {value!r}")


def check_compatible(base, sft) -> None:
    """Same architecture and the same parameter names and shapes, or an error naming the first
    mismatching parameter."""
    base_type, sft_type = getattr(base.config, "model_type", "?"), getattr(sft.config, "model_type", "?")
    if type(base) is not type(sft) or base_type != sft_type:
        raise InterventionError(f"base is a {type(base).__name__} ({base_type}) but SFT is a {type(sft).__name__} "
                                f"({sft_type}); fusion needs the SFT model fine-tuned from this base")
    base_tied = bool(getattr(base.config, "tie_word_embeddings", False))
    sft_tied = bool(getattr(sft.config, "tie_word_embeddings", False))
    if base_tied != sft_tied:
        raise InterventionError(f"tie_word_embeddings differs: base {base_tied}, SFT {sft_tied}")
    base_params = dict(base.named_parameters(remove_duplicate=False))
    sft_params = dict(sft.named_parameters(remove_duplicate=False))
    for name, param in base_params.items():
        if name not in sft_params:
            raise InterventionError(f"parameter {name!r} of the base model is missing from the SFT model; "
                                    "fusion needs the SFT model fine-tuned from this base")
        if param.shape != sft_params[name].shape:
            raise InterventionError(f"parameter {name!r}: base shape {tuple(param.shape)} vs SFT shape "
                                    f"{tuple(sft_params[name].shape)}; base and SFT must have the same architecture "
                                    "(same preset and tokenizer)")
    extra = [n for n in sft_params if n not in base_params]
    if extra:
        raise InterventionError(f"parameter {extra[0]!r} of the SFT model is missing from the base model; "
                                "fusion needs the SFT model fine-tuned from this base")


def parameter_groups(model) -> list[tuple[list[str], torch.nn.Parameter]]:
    """Each distinct parameter tensor with all its names (tied embeddings have two)."""
    groups: dict[int, tuple[list[str], torch.nn.Parameter]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), ([], param))[0].append(name)
    return list(groups.values())


def parse_module_alphas(items: list[str] | None) -> dict[str, float]:
    """CLI `NAME=A` pairs -> {NAME: A}."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            alpha = float(value)
        except ValueError:
            alpha = None
        if not sep or not name or alpha is None:
            raise InterventionError(f"--alpha-module {item!r}: expected NAME=ALPHA, e.g. embed_tokens=1.0")
        out[name] = alpha
    return out


def validate_module_alphas(model, alpha: float, module_alphas: dict[str, float]) -> None:
    check_unit_interval("alpha", alpha)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    for key, value in module_alphas.items():
        check_unit_interval(f"alpha for {key!r}", value)
        if not any(key in n for n in names):
            kinds = sorted({module_type(n) for n in names})
            raise InterventionError(f"--alpha-module {key}={value}: no parameter name contains {key!r}; "
                                    f"module names are {', '.join(kinds)}")
    for names, _ in parameter_groups(model):  # tied tensors (embed_tokens = lm_head) can take one alpha only
        per_alias = {name: alpha_for([name], alpha, module_alphas) for name in names}
        if len(set(per_alias.values())) > 1:
            raise InterventionError(f"--alpha-module: {' and '.join(names)} are one tied tensor but would get alphas "
                                    f"{', '.join(f'{v} ({n})' for n, v in per_alias.items())}; give them the same alpha")


def alpha_for(names: list[str], alpha: float, module_alphas: dict[str, float]) -> float:
    """The override whose key is the longest substring of any of the tensor's names, else alpha."""
    matches = [(len(key), value) for key, value in module_alphas.items() if any(key in n for n in names)]
    return max(matches, key=lambda m: m[0])[1] if matches else alpha


def interpolate(base: torch.Tensor, sft: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * sft + (1 - alpha) * base, computed in float32, exact at alpha 0 and 1."""
    if alpha == 1.0:
        return sft.detach().clone()
    if alpha == 0.0:
        return base.detach().to(sft.dtype).clone()
    return (alpha * sft.detach().float() + (1.0 - alpha) * base.detach().float()).to(sft.dtype)


@torch.no_grad()
def fuse(base, sft, alpha: float = 0.5, module_alphas: dict[str, float] | None = None):
    """A new model (a copy of `sft`, config and generation config included) with fused weights."""
    module_alphas = dict(module_alphas or {})
    check_compatible(base, sft)
    validate_module_alphas(sft, alpha, module_alphas)
    fused = copy.deepcopy(sft)
    base_params = dict(base.named_parameters(remove_duplicate=False))
    for names, param in parameter_groups(fused):
        anchor = base_params[names[0]].to(param.device)
        param.copy_(interpolate(anchor, param, alpha_for(names, alpha, module_alphas)))
    return fused


def effective_alphas(model, alpha: float, module_alphas: dict[str, float]) -> dict[str, float]:
    """The alpha each parameter tensor got (first name of each tensor), for the report."""
    return {names[0]: alpha_for(names, alpha, module_alphas) for names, _ in parameter_groups(model)}
