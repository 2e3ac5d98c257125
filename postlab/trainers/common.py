"""Pieces every trainer shares: optimizer, schedule, the accumulate-then-step update, seeds,
data-parallel counts, and model set-up. Trainers compose these; none of them is a base class.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.distributed as dist

from postlab import distributed
from postlab.config import ConfigError, ModelConfig, OptimConfig
from postlab.data.batching import PackedBatch, pack
from postlab.data.records import Encoded
from postlab.models.forward import token_outputs
from postlab.objectives.registry import LossInputs, Normalizer, Objective, aggregate


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# Re-exported: distributed set-up lives in postlab.distributed (one owner); these names stay importable here.
world = distributed.world
is_main = distributed.is_main


def all_reduce_gradients(model) -> None:
    """Sum gradients over data-parallel ranks (identity on one process; FSDP2-sharded models
    reduce their own gradients, see postlab.distributed.shard).

    `aggregate` already divides by the step's GLOBAL counts, so each rank's gradient is its
    share of the step's loss and the step's gradient is the plain SUM over ranks (not the mean
    DistributedDataParallel computes). One flat all-reduce per step, after all micro-batches.
    """
    if world()[1] == 1 or distributed.is_sharded(model):
        return
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:  # a rank whose micro-batches skipped some parameter: contribute zeros
        params = [p for p in model.parameters() if p.requires_grad]
        for i in missing:
            params[i].grad = torch.zeros_like(params[i])
        grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(model, src: int = 0) -> None:
    """Make every rank start from rank `src`'s weights (identity on one process); call it before sharding."""
    if world()[1] == 1 or distributed.is_sharded(model):
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src)


def prompts_per_rank(prompts_per_step: int, world_size: int) -> int:
    """This rank's number of whole prompt groups per step (RL, RFT); a ConfigError when they do not divide."""
    if prompts_per_step % world_size:
        raise ConfigError(f"batch.prompts_per_step ({prompts_per_step}) must be divisible by the number of "
                          f"data-parallel processes ({world_size}): each process takes whole prompt groups. Use a "
                          f"multiple of {world_size}, or another --nproc_per_node")
    return prompts_per_step // world_size


def shard_for_rank(items: Sequence, rank: int | None = None, world_size: int | None = None) -> list:
    """This rank's share of one step's sequences (strided, so ranks get similar lengths)."""
    r, w = world()
    rank = r if rank is None else rank
    world_size = w if world_size is None else world_size
    return list(items[rank::world_size])


def lr_at(step: int, total_steps: int, base_lr: float, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the schedule."""
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if cfg.schedule == "linear":
        factor = 1.0 - progress
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * factor)


def make_optimizer(model, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and embeddings' 1-D params."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA, torch >= 2.4) updates all parameters in a few vectorized
    # passes instead of a Python loop of small ops per tensor.
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= {"cpu", "cuda"} and all(p.dtype.is_floating_point for g in groups for p in g["params"])
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)
    except (RuntimeError, TypeError):  # older torch or an unsupported device/dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        if not g.get("fixed_lr"):  # e.g. PPO's critic keeps its own constant learning rate
            g["lr"] = lr


def step_normalizer(micro_batches: Sequence[PackedBatch], constant: float = 1.0, device="cpu") -> Normalizer:
    """Global counts of one optimizer step: all micro-batches here, summed over ranks."""
    tokens = sum(b.num_targets for b in micro_batches)
    seqs = sum(b.num_seqs for b in micro_batches)
    entropy_tokens = sum(float(b.extras["entropy_mask"].sum()) if "entropy_mask" in b.extras else b.num_targets
                         for b in micro_batches)
    tokens, seqs, entropy_tokens = distributed.all_reduce_sum([float(tokens), float(seqs), entropy_tokens], device)
    return Normalizer(tokens=tokens, seqs=seqs, constant=constant, entropy_tokens=entropy_tokens)


# Per-target extras a PackedBatch may carry, copied to the LossInputs field of the same name.
_TOKEN_FIELDS = ("token_weights", "advantages", "old_logp", "ref_logp", "returns", "old_values", "off_policy",
                 "teacher_logp")


def loss_inputs(model, batch: PackedBatch, objective: Objective, ref_model=None, want_entropy: bool | str = False,
                value_fn=None, forward_fn=None, teacher=None) -> tuple[LossInputs, torch.Tensor | None]:
    """Run the policy (and the reference when the objective needs it) on one micro-batch.

    `forward_fn` replaces `token_outputs` (same signature), e.g. RL's shared-prompt packing. `teacher`: a
    frozen model whose logits (and log-probs) at the trained positions the objective reads (GKD).
    """
    forward_fn = forward_fn or token_outputs
    out = forward_fn(model, batch, want_logits=objective.needs_logits, want_entropy=want_entropy,
                     want_hidden=value_fn is not None)
    inp = LossInputs(logp=out.logp, seq_idx=batch.seq_idx, num_seqs=batch.num_seqs, seq_weights=batch.seq_weights,
                     logits=out.logits)
    for name in _TOKEN_FIELDS:
        if name in batch.extras:
            setattr(inp, name, batch.extras[name])
    if objective.needs_ref and inp.ref_logp is None:
        if ref_model is None:
            raise TrainingError(f"objective {objective.name!r} needs a reference model")
        with torch.no_grad():
            ref = forward_fn(ref_model, batch, want_logits=objective.needs_logits)
        inp.ref_logp, inp.ref_logits = ref.logp, ref.logits
    if teacher is not None:
        with torch.no_grad():
            t = forward_fn(teacher, batch, want_logits=True)
        inp.teacher_logp, inp.teacher_logits = t.logp, t.logits
        if inp.logits is not None and t.logits.shape[-1] != inp.logits.shape[-1]:
            # models of two sizes may pad their embeddings differently past the shared tokenizer: compare
            # the ids both have (the rows past the tokenizer are never sampled)
            v = min(t.logits.shape[-1], inp.logits.shape[-1])
            inp.logits, inp.teacher_logits = inp.logits[:, :v], t.logits[:, :v]
    if value_fn is not None:
        inp.values = value_fn(out.hidden, batch)
    return inp, out.entropy


def accumulate_gradients(model, micro_batches: Sequence[PackedBatch], objective: Objective, hparams: dict,
                         aggregation: str, norm: Normalizer, ref_model=None, want_entropy: bool = False,
                         value_fn=None, forward_fn=None, pad_batch: PackedBatch | None = None,
                         entropy_coef: float = 0.0, teacher=None) -> dict:
    """Forward/backward every micro-batch of one optimizer step; gradients add up to the step's loss.

    `entropy_coef` > 0 adds an entropy bonus (verl's entropy_coeff, LUFFY's and UFT's 0.001): minus
    entropy_coef x the policy's mean token entropy over the step's trained tokens (those a batch's
    `entropy_mask` keeps, where it has one), with its gradient. `teacher`: see `loss_inputs`.

    Data parallel: the returned metrics are the step's (summed over ranks, so `loss` is the
    global loss). A sharded (FSDP2) model's forward and backward are collectives, so every rank
    runs as many as the rank with the most micro-batches: the others repeat a micro-batch of
    theirs (or `pad_batch`, for a rank with none) with weight 0, which adds nothing."""
    total = 0.0
    metrics: dict[str, float] = {}
    entropy_sum, entropy_n = 0.0, 0
    device = next(model.parameters()).device
    runs = [(mb, True) for mb in micro_batches if mb.num_targets > 0]  # an empty one contributes 0: skipped
    if distributed.is_sharded(model):
        most = distributed.all_reduce_max(len(runs))
        filler = runs[-1][0] if runs else pad_batch
        if len(runs) < most and filler is None:
            raise TrainingError("data parallel: this rank has no micro-batch for the step and no pad_batch was given "
                                "(a sharded model needs the same number of forwards on every rank)")
        runs += [(filler, False)] * (most - len(runs))
    for mb, real in runs:
        mb = mb.to(device)
        inp, entropy = loss_inputs(model, mb, objective, ref_model, "grad" if entropy_coef else want_entropy,
                                   value_fn, forward_fn, teacher)
        per_token, m = objective.fn(inp, **hparams)
        loss = aggregate(per_token, inp.seq_idx, inp.num_seqs, aggregation, norm)
        if entropy_coef:
            mask = mb.extras.get("entropy_mask")
            kept = entropy if mask is None else entropy * mask
            loss = loss - entropy_coef * kept.sum() / max(norm.entropy_tokens, 1.0)
            entropy = entropy.detach()
        if not real:
            (loss * 0.0).backward()  # joins the collectives, adds zero gradient
            continue
        if not torch.isfinite(loss):
            raise TrainingError("non-finite loss")
        loss.backward()
        total += loss.item()
        share = mb.num_targets / max(norm.tokens, 1.0)
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + v * share
        if entropy is not None:
            entropy_sum += entropy.sum().item()
            entropy_n += entropy.numel()
    if world()[1] > 1:  # each rank holds its share (global counts): the step's values are the sums
        keys = sorted({k for d in distributed.all_gather_objects(sorted(metrics)) for k in d})
        sums = distributed.all_reduce_sum([total, entropy_sum, float(entropy_n)] + [metrics.get(k, 0.0) for k in keys],
                                          device)
        total, entropy_sum, entropy_n = sums[0], sums[1], int(sums[2])
        metrics = dict(zip(keys, sums[3:]))
    metrics["loss"] = total
    if entropy_n:
        metrics["entropy"] = entropy_sum / entropy_n
    return metrics


def clip_gradients(model, grad_clip: float | None) -> float:
    """Clip `model`'s accumulated gradients to norm `grad_clip` (None: no clipping); returns the pre-clip norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if distributed.is_sharded(model):  # DTensor gradients: the norm is reduced over ranks
        return distributed.clip_grad_norm(params, grad_clip)
    if grad_clip is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def optimizer_step(model, optimizer, grad_clip: float | None) -> float:
    """Clip `model`'s gradients, check them and step `optimizer` (which may hold more parameter
    groups, clipped by the caller); returns the pre-clip gradient norm."""
    grad_norm = clip_gradients(model, grad_clip)
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingError("non-finite gradient norm")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


def update_step(model, optimizer, micro_batches: Sequence[PackedBatch], objective: Objective, hparams: dict,
                aggregation: str, grad_clip: float | None, norm: Normalizer | None = None, **accumulate) -> dict:
    """The tail of every trainer's step: gradients of the step's micro-batches accumulated against the
    step's global counts (`norm`, by default `step_normalizer` of the micro-batches), summed over
    data-parallel ranks, clipped, one optimizer step. Returns the objective's metrics and `grad_norm`.
    `accumulate` goes to `accumulate_gradients` (ref_model, pad_batch, ...)."""
    if norm is None:
        norm = step_normalizer(micro_batches, device=next(model.parameters()).device)
    metrics = accumulate_gradients(model, micro_batches, objective, hparams, aggregation, norm, **accumulate)
    all_reduce_gradients(model)  # sum over ranks (aggregate used global counts); FSDP2 sums its own
    metrics["grad_norm"] = optimizer_step(model, optimizer, grad_clip)
    return metrics


def pack_micro_batches(seqs: Sequence[Encoded], micro_batch_sequences: int) -> list[PackedBatch]:
    return [pack(seqs[i:i + micro_batch_sequences]) for i in range(0, len(seqs), micro_batch_sequences)]


def setup_model(cfg: ModelConfig, device, texts_for_tokenizer=None, seed: int = 0):
    """(model, tokenizer) from a checkpoint path, or a fresh tiny preset with a tokenizer built from texts.

    The training switches of `cfg` are applied here, so every trainer gets them: the chat template
    choice, LoRA adapters (postlab.models.lora), gradient checkpointing and autocast
    (postlab.models.forward.set_autocast). All are off by default."""
    from postlab.models import build_tokenizer, init_model, load_model, load_tokenizer
    from postlab.models.forward import set_autocast
    from postlab.models.tokenizer import choose_chat_template

    if cfg.path is not None:
        tok = load_tokenizer(cfg.path, trust_remote_code=cfg.trust_remote_code)
        model = load_model(cfg.path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation,
                           trust_remote_code=cfg.trust_remote_code, device=device)
    else:
        tok = build_tokenizer(texts_for_tokenizer or [], cfg.tokenizer.kind, cfg.tokenizer.vocab_size)
        model = init_model(cfg.preset, tok, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation, seed=seed)
        model.to(device)
    choose_chat_template(tok, cfg.chat_template)
    if cfg.lora is not None:
        from postlab.models import lora

        lora.apply(model, cfg.lora, base_path=cfg.path)
    if cfg.gradient_checkpointing:
        # Non-reentrant: works when the inputs need no grad (frozen embeddings under LoRA) and with no_grad forwards.
        # transformers renamed it (activation_*, 5.x; the old name warns and goes in v6); older releases have only
        # the old name, and pyproject allows them
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    set_autocast(model, cfg.autocast)
    return model, tok


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
