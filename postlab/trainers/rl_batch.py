"""From finished episodes to packed training micro-batches: rewards, advantages, extras.

Kept apart from the trainer loop so each piece is a small function with a test:
rewards (env verifier or user function, DAPO overlong shaping) -> advantages (the
algorithm spec's estimator, postlab.objectives.algorithms) -> dynamic sampling (drop
all-same groups) -> packed micro-batches whose `extras` carry per-target old log-probs, advantages and, for PPO, turn values/returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from postlab.data.batching import PackedBatch, pack
from postlab.objectives import advantages as adv_fns
from postlab.rollout.episodes import Episode


def episode_rewards(episodes: Sequence[Episode], reward_fn: Callable | None = None) -> torch.Tensor:
    """[N] returns: the env's summed turn rewards, or `reward_fn(episode)` (a float or a dict of components)."""
    if reward_fn is None:
        return torch.tensor([e.reward for e in episodes], dtype=torch.float32)
    out = []
    for e in episodes:
        r = reward_fn(e)
        out.append(sum(r.values()) if isinstance(r, dict) else float(r))
    return torch.tensor(out, dtype=torch.float32)


def keep_informative_groups(n: int, rewards: torch.Tensor, group_size: int) -> list[int]:
    """DAPO dynamic sampling: indices of episodes whose group has reward variance."""
    zero = adv_fns.zero_std_groups(rewards, group_size)
    return [i for i in range(n) if not zero[i // group_size]]


def turn_advantages(episodes: Sequence[Episode], turn_values: list[list[float]], gamma: float, lam: float):
    """PPO: per-episode (advantages [K], returns [K]) from GAE over turn rewards."""
    return [adv_fns.gae([t.reward for t in e.turns], v, gamma, lam) for e, v in zip(episodes, turn_values)]


def value_indices(e: Episode) -> list[int]:
    """Per target: the position (within the episode) of the last context token before its turn."""
    return [t.start - 1 for t in e.turns for _ in t.token_ids]


def pack_episodes(episodes: Sequence[Episode], per_token: dict[str, list[torch.Tensor]], with_values: bool = False,
                  device="cpu") -> PackedBatch:
    """Pack episodes padding-free; `per_token[name][i]` is episode i's [n_i] tensor for extras[name]."""
    batch = pack([e.encoded() for e in episodes])
    batch.extras["old_logp"] = torch.tensor([lp for e in episodes for lp in e.target_logprobs()], dtype=torch.float32)
    for name, tensors in per_token.items():
        batch.extras[name] = torch.cat(tensors)
    if with_values:
        offsets = torch.tensor([0] + [len(e.input_ids) for e in episodes]).cumsum(0)
        batch.extras["value_index"] = torch.tensor([int(offsets[i]) + p for i, e in enumerate(episodes)
                                                    for p in value_indices(e)], dtype=torch.long)
    if batch.extras["old_logp"].numel() != batch.num_targets:
        raise AssertionError("sampler log-probs do not align with trained tokens")
    return batch.to(device)


def prompt_groups(episodes: Sequence[Episode]) -> list[list[int]]:
    """Runs of consecutive episodes that start from the same prompt (the G samples of one seed)."""
    groups: list[list[int]] = []
    for i, e in enumerate(episodes):
        first = e.turns[0].start
        if groups and episodes[groups[-1][0]].input_ids[:first] == e.input_ids[:first] \
                and episodes[groups[-1][0]].turns[0].start == first:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def shared_prefix_pays(episodes: Sequence[Episode], model) -> bool:
    """Whether `pack_shared_prefix` costs fewer FLOPs than one row per episode for `model`.

    Sharing a group's prompt saves (G - 1) prompt forwards, but the shared row attends through a
    dense L x L mask (no causal skipping), while separate rows run sdpa's causal kernel
    (`models.forward`, sum n^2 / 2). Short answers after a long prompt favour sharing (about 2x
    on single-turn GeneralPoints); long multi-turn episodes do not (the shared rows were 1.6x
    slower on 512 VIter-5 episodes, docs/benchmarks.md). Per layer: each token costs its
    projections and MLP, each attended pair 4 * hidden multiply-adds (scores and values)."""
    from postlab.models.forward import forward_costs, padded_path_blocked

    per_token, per_pair = forward_costs(model.config)
    lengths = [len(e.input_ids) for e in episodes]
    if padded_path_blocked(model):  # one packed row with a block-diagonal mask: dense over the row
        full = sum(lengths) * per_token + sum(lengths) ** 2 * per_pair
    else:
        full = sum(n * per_token + n * n / 2 * per_pair for n in lengths)
    shared = 0.0
    for g in prompt_groups(episodes):
        first = episodes[g[0]].turns[0].start
        row = first + sum(lengths[i] - first for i in g)
        shared += row * per_token + row * row * per_pair
    return shared < full


def pack_for_update(episodes: Sequence[Episode], per_token: dict[str, list[torch.Tensor]], model,
                    with_values: bool = False, device="cpu") -> PackedBatch:
    """`pack_shared_prefix` where sharing the prompt is cheaper for `model`, else `pack_episodes`
    (same log-probs and gradients either way: tests/rl/test_episodes.py)."""
    if shared_prefix_pays(episodes, model):
        return pack_shared_prefix(episodes, per_token, with_values, device)
    return pack_episodes(episodes, per_token, with_values, device)


def pack_shared_prefix(episodes: Sequence[Episode], per_token: dict[str, list[torch.Tensor]],
                       with_values: bool = False, device="cpu") -> PackedBatch:
    """Pack a micro-batch so each group's common prompt is computed once.

    Episodes that start from the same prompt (the G samples of one seed) share their longest
    common prefix up to the first generated token. The row is [prefix_a, rest_a1, ..., rest_aG,
    prefix_b, ...]; a 4-D attention mask lets every rest attend to its prefix and causally to
    itself, and positions continue from the prefix. Log-probs and gradients equal those of
    packing the full sequences (tests/rl), but the prompt tokens - most of the tokens of a
    short-answer RL batch - go through the model once per group instead of G times.
    """
    groups = prompt_groups(episodes)
    ids, pos, tgt_idx, targets, seq_idx, segments = [], [], [], [], [], []  # (start, end, prefix_start, prefix_len)
    value_index: list[int] = []
    for g in groups:
        first = episodes[g[0]].turns[0].start
        p0 = len(ids)
        prompt = episodes[g[0]].input_ids[:first]
        ids += prompt
        pos += range(first)
        segments.append((p0, p0 + first, p0, 0))
        for i in g:
            e = episodes[i]
            r0 = len(ids)
            rest = e.input_ids[first:]
            ids += rest
            pos += range(first, len(e.input_ids))
            segments.append((r0, r0 + len(rest), p0, first))
            packed_at = lambda t: p0 + t if t < first else r0 + t - first  # noqa: E731  (episode index -> row)
            for t in range(first, len(e.input_ids)):
                if e.loss_mask[t]:
                    tgt_idx.append(packed_at(t - 1))
                    targets.append(e.input_ids[t])
                    seq_idx.append(i)
            if with_values:
                value_index += [packed_at(p) for p in value_indices(e)]
    L = len(ids)
    allowed = torch.zeros(L, L, dtype=torch.bool)
    for start, end, prefix, prefix_len in segments:
        allowed[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        allowed[start:end, prefix:prefix + prefix_len] = True
    mask = torch.zeros(1, 1, L, L).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    batch = PackedBatch(input_ids=torch.tensor(ids)[None], position_ids=torch.tensor(pos)[None],
                        target_index=torch.tensor(tgt_idx, dtype=torch.long),
                        targets=torch.tensor(targets, dtype=torch.long),
                        seq_idx=torch.tensor(seq_idx, dtype=torch.long),
                        seq_lengths=torch.tensor([len(e.input_ids) for e in episodes]),
                        seq_weights=torch.ones(len(episodes)), num_seqs=len(episodes),
                        extras={"attention_mask": mask})
    batch.extras["old_logp"] = torch.tensor([lp for e in episodes for lp in e.target_logprobs()], dtype=torch.float32)
    for name, tensors in per_token.items():
        batch.extras[name] = torch.cat(tensors)
    if with_values:
        batch.extras["value_index"] = torch.tensor(value_index, dtype=torch.long)
    return batch.to(device)


def packed_outputs(model, batch: PackedBatch, want_logits: bool = False, want_entropy: bool | str = False,
                   want_hidden: bool = False):
    """`models.forward.token_outputs`, passing the batch's 4-D attention mask when it has one."""
    from postlab.models.forward import autocast, outputs_from_logits, token_outputs

    mask = batch.extras.get("attention_mask")
    if mask is None:
        return token_outputs(model, batch, want_logits, want_entropy, want_hidden)
    with autocast(model):  # model.autocast (a no-op by default); the value head reads float32 hidden states
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask.to(model.dtype),
                    use_cache=False, logits_to_keep=batch.target_index, output_hidden_states=want_hidden)
        return outputs_from_logits(out.logits[0], batch.targets, want_logits, want_entropy,
                                   hidden=out.hidden_states[-1].float() if want_hidden else None)


def broadcast(values_per_episode: Sequence[torch.Tensor | float], episodes: Sequence[Episode]) -> list[torch.Tensor]:
    """Per-episode scalar -> [n_i] tensor over its trained tokens; per-turn [K] -> per token of each turn."""
    out = []
    for v, e in zip(values_per_episode, episodes):
        v = torch.as_tensor(v, dtype=torch.float32)
        turns = torch.tensor(e.target_turns(), dtype=torch.long)
        out.append(v.expand(len(turns)).clone() if v.dim() == 0 else v[turns])
    return out


def off_policy_mask(episode: Episode) -> torch.Tensor:
    """[n] 1.0 on the trained tokens the policy did not sample: every token of an expert trace (LUFFY,
    CHORD), the hint at the start of the first turn (UFT); 0.0 on the policy's own tokens."""
    n = len(episode.target_turns())
    if episode.off_policy:
        return torch.ones(n)
    mask = torch.zeros(n)
    mask[:episode.hint_tokens] = 1.0
    return mask
