"""Batched sampling with a KV cache: the one `generate` every trainer and evaluation calls.

`generate(model, tokenizer, prompts, params)` takes prompt token ids and returns one
`Completion` per (prompt, sample), prompt-major (prompt 0's n samples, then prompt 1's, ...).

Why it is fast (RL time is dominated by generation at paper scale and by per-token
overhead at lab scale):
- rows are left-padded once; every buffer (tokens, log-probs, KV cache, key mask) is
  preallocated for prompt + max_new_tokens, so the decode loop allocates nothing per row;
- finished rows are tracked with a boolean tensor; there is no Python loop over rows per
  token (stop strings, which need text, are checked every `STOP_CHECK_EVERY` tokens only);
- for Qwen2/Llama checkpoints (all lab presets) decoding bypasses the generic
  `transformers` forward (mask builders, cache objects) and calls the model's own modules
  on a static cache (`postlab.rollout.fastdecode`); other architectures use the HF forward
  with a DynamicCache. Both paths use the model's weights and modules, so the sampler's
  log-probs are the policy's (tests/rl check them against the trainer's recomputation).

Log-probs are of the temperature-1 distribution (the policy pi_theta), whatever the sampling
temperature, top-p or top-k: that is what the trainer recomputes and what importance ratios
need. Temperature 0 is greedy. Sampling draws from a `torch.Generator` seeded with
`params.seed`, so the same seed gives the same samples.

Repetition penalty (`repetition_penalty`, HF/CTRL convention, Keskar et al. 2019): before
temperature, top-k and top-p, the logit of every token already in the row (its prompt and
what it generated so far) is divided by the penalty when positive and multiplied by it when
negative; greedy decoding takes the argmax of the penalized logits. The penalty changes the
distribution the sampler draws from, so with a penalty != 1 the stored log-probs are of that
penalized distribution (at temperature 1), the behaviour policy that actually produced the
tokens, not of pi_theta: a trainer that needs pi_theta's log-probs of such samples recomputes
them (RASFT does; the RL trainer samples without a penalty). With the default 1.0 nothing is
computed and the results are bit-identical to sampling without the option.
"""

from __future__ import annotations

import dataclasses

import torch

STOP_CHECK_EVERY = 4  # decode steps between stop-string checks (text is needed, so not every token)


@dataclasses.dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k
    n: int = 1  # samples per prompt
    stop: tuple[str, ...] = ()  # stop strings (kept in the output, like EOS ends a turn)
    seed: int = 0
    # > 1 discourages tokens already in the prompt or the output (HF/CTRL convention; RASFT's
    # rollouts use 1.1); 1.0 = off. See the module doc for what it does to the stored log-probs.
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1:
            raise ValueError(f"top_k must be >= 0 and n >= 1, got top_k={self.top_k}, n={self.n}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        self.stop = tuple(self.stop)


@dataclasses.dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]  # sampled tokens, including the EOS token when the model emitted it
    text: str  # decoded tokens without EOS
    logprobs: list[float]  # log pi_theta(token) at temperature 1, one per token_ids entry
    finish_reason: str  # "stop" (EOS or stop string) or "length"


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k and top-p applied to [B, V] logits (masked entries become -inf)."""
    if params.temperature != 1.0:  # x / 1.0 == x exactly: skip a [B, V] pass per decode step
        logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens strictly more likely already cover top_p
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """[B, V] logits with every `seen` token's logit divided by `penalty` when > 0, multiplied when < 0.

    HF's `RepetitionPenaltyLogitsProcessor` (CTRL): a penalty > 1 makes a token seen before
    less likely whatever the sign of its logit. `seen` is a bool [B, V] mask of the tokens in
    each row's prompt and output so far (a token counts once however often it occurred).
    """
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def sample_next(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator,
                seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(next tokens [B], their temperature-1 log-probs [B]) from float logits [B, V].

    With `params.repetition_penalty` != 1 the logits of the `seen` tokens are penalized first,
    and the log-probs are of the penalized distribution (see the module doc)."""
    if params.repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("sample_next: a repetition penalty needs the mask of tokens seen so far")
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logp = torch.log_softmax(logits, dim=-1)
    if params.temperature == 0:
        nxt = logits.argmax(-1)
    else:
        probs = torch.softmax(process_logits(logits, params), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return nxt, logp.gather(-1, nxt[:, None]).squeeze(-1)


def stop_token_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gc_eos if isinstance(gc_eos, (list, tuple)) else [gc_eos])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], params: SamplingParams, backend=None) -> list[Completion]:
    """Sample `params.n` completions per prompt. `backend` (e.g. `VLLMBackend`) replaces the local engine."""
    if backend is not None:
        return backend.generate(prompts, params)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs a non-empty list of non-empty prompts")
    from postlab.rollout.fastdecode import make_decoder

    device = next(model.parameters()).device
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=device)
    pad = _pad_id(tokenizer, stops)
    # identical prompts (the n samples, and groups of episodes sharing a seed) are prefilled once
    distinct: dict[tuple, int] = {}
    rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts for _ in range(params.n)]
    uniq = list(distinct)
    W, T = max(len(p) for p in uniq), params.max_new_tokens
    ids, valid = _left_pad(uniq, W, pad, device)
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    try:
        decoder = make_decoder(model, len(rows), W + T)
        rows_t = torch.tensor(rows, device=device)
        logits = decoder.prefill(ids, pos, valid, rows_t)
        next_pos = (pos[:, -1] + 1).index_select(0, rows_t)
        seen = _seen_mask([uniq[r] for r in rows], logits.shape[-1], device) if params.repetition_penalty != 1.0 else None
        out = _decode(decoder, logits, next_pos, W, params, tokenizer, stops, pad, seen)
    finally:
        model.train(was_training)
    return _completions(tokenizer, params, out.tokens, out.logprobs, stops.tolist(), out.by_string)


def _pad_id(tokenizer, stops: torch.Tensor) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])


def _left_pad(seqs: list, width: int, pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, width] ids, [N, width] bool mask of real tokens), every sequence right-aligned."""
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    valid = torch.zeros(len(seqs), width, dtype=torch.bool)
    for r, p in enumerate(seqs):
        if len(p):
            ids[r, width - len(p):] = torch.tensor(p)
            valid[r, width - len(p):] = True
    return ids.to(device), valid.to(device)


def _seen_mask(contexts: list, vocab: int, device) -> torch.Tensor:
    """[B, V] bool: the tokens of each row's context (the repetition penalty's 'seen so far')."""
    seen = torch.zeros(len(contexts), vocab, dtype=torch.bool, device=device)
    for b, ctx in enumerate(contexts):
        seen[b, torch.tensor(list(ctx), dtype=torch.long, device=device)] = True
    return seen


@dataclasses.dataclass
class _Decoded:
    tokens: list[list[int]]  # [B][steps]: sampled tokens (pad after a row finished)
    logprobs: list[list[float]]
    by_string: list[bool]


def _decode(decoder, logits, next_pos, first_slot: int, params: SamplingParams, tokenizer, stops, pad, seen,
            on_drop=None) -> _Decoded:
    """The sampling loop after a prefill: token t of every row is written at cache slot first_slot + t.

    Finished rows are dropped from the decoder's batch once a quarter of them are done;
    `on_drop(batch_rows, local_rows)` is told which rows leave (before they do), and at the end
    which rows are still in the decoder, so a caller that keeps the cache (DialogueSampler) can
    save every row's cache as it was when the row stopped.
    """
    device = logits.device
    B, T = logits.shape[0], params.max_new_tokens
    gen = torch.Generator(device=device).manual_seed(params.seed)
    out_tokens = torch.full((B, T), pad, dtype=torch.long, device=device)
    out_logp = torch.zeros(B, T, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    by_string = torch.zeros(B, dtype=torch.bool, device=device)
    alive = torch.arange(B, device=device)  # original row of each row still in the decoder's batch
    steps = 0
    for t in range(T):
        nxt, lp = sample_next(logits, params, gen) if seen is None else sample_next(logits, params, gen, seen)
        finished = done[alive]
        nxt = nxt.masked_fill(finished, pad)
        out_tokens[alive, t], out_logp[alive, t] = nxt, lp.masked_fill(finished, 0.0)
        done[alive] = finished | torch.isin(nxt, stops)
        steps = t + 1
        if params.stop and (steps % STOP_CHECK_EVERY == 0 or steps == T):
            hit = _stop_string_rows(tokenizer, out_tokens[:, :steps], done, params.stop)
            by_string |= hit
            done |= hit
        if steps == T:
            break
        keep = ~done[alive]
        n_keep = int(keep.sum())
        if n_keep == 0:
            break
        if seen is not None:
            seen[torch.arange(len(nxt), device=device), nxt] = True
        if decoder.can_select and n_keep <= 0.75 * len(alive):  # drop finished rows from the batch
            idx = keep.nonzero().flatten()
            if on_drop is not None:
                gone = (~keep).nonzero().flatten()
                on_drop(alive[gone], gone)
            decoder.select(idx)
            alive, nxt, next_pos = alive[idx], nxt[idx], next_pos[idx]
            seen = seen[idx] if seen is not None else None
        logits = decoder.step(nxt, next_pos, first_slot + t)
        next_pos = next_pos + 1
    if on_drop is not None:
        on_drop(alive, torch.arange(len(alive), device=device))
    return _Decoded(out_tokens[:, :steps].tolist(), out_logp[:, :steps].tolist(), by_string.tolist())


class DialogueSampler:
    """Turn-after-turn sampling for a fixed set of dialogues that keeps each one's KV cache.

    A multi-turn episode's context at turn k is its context at turn k-1, the tokens sampled
    then, and the environment's feedback. Re-encoding it every turn (what `generate` would do)
    makes a 10-turn episode cost ~10 prefills of a growing dialogue; here turn k feeds only
    what is new (the last sampled token, which was never fed, and the feedback) on top of the
    cache kept from turn k-1. A dialogue whose context does not extend what was cached (the
    first turn, or a window cut by `max_context`) is encoded from scratch, positions from 0,
    exactly as `generate` would. Rows of the cache may have holes (slots left over by shorter
    rows): the key mask hides them and positions are per row, so attention and rotary
    positions are those of the contiguous dialogue (tests/rl/test_episodes.py checks the equivalence).

    Only the static Qwen2/Llama decoder keeps a cache this way (`supports`); other models and
    external backends go through `generate` each turn.
    """

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.cached: dict[int, list[int]] = {}  # dialogue id -> the tokens whose K/V are in the cache
        self.row: dict[int, int] = {}  # dialogue id -> row of the cache tensors
        self.k: list[torch.Tensor] = []  # per layer [rows, kv_heads, slots, head_dim]
        self.v: list[torch.Tensor] = []
        self.key_mask: torch.Tensor | None = None  # [rows, slots]: slots holding a real token

    @staticmethod
    def supports(model) -> bool:
        from postlab.rollout.fastdecode import has_fast_path

        return has_fast_path(model)

    @torch.no_grad()
    def sample(self, dialogues: list[int], contexts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """One completion per dialogue (`params.n` must be 1), continuing `contexts[i]` for dialogue `dialogues[i]`.

        Dialogues not passed are forgotten (their cache rows are freed)."""
        from postlab.rollout.fastdecode import StaticQwenLlamaDecoder

        if params.n != 1:
            raise ValueError("DialogueSampler samples one completion per dialogue (params.n = 1)")
        if not contexts or any(len(c) == 0 for c in contexts):
            raise ValueError("DialogueSampler needs non-empty contexts")
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        stops = torch.tensor(stop_token_ids(model, tok), device=device)
        pad = _pad_id(tok, stops)
        B, T = len(dialogues), params.max_new_tokens
        # what each dialogue must feed: what is new since the cache, or the whole context
        old_row, segs = [], []
        for d, ctx in zip(dialogues, contexts):
            c = self.cached.get(d)
            extends = c is not None and len(ctx) > len(c) and ctx[:len(c)] == c
            old_row.append(self.row[d] if extends else -1)
            segs.append(ctx[len(c):] if extends else ctx)
        base_pos = torch.tensor([len(self.cached[d]) if r >= 0 else 0 for d, r in zip(dialogues, old_row)],
                                device=device)
        old_t = torch.tensor(old_row, device=device)
        has_old = old_t >= 0
        # the kept cache of these dialogues, without the slots none of them uses
        if self.key_mask is not None and bool(has_old.any()):
            kept_mask = torch.zeros(B, self.key_mask.shape[1], dtype=torch.bool, device=device)
            kept_mask[has_old] = self.key_mask[old_t[has_old]]
            cols = kept_mask.any(0).nonzero().flatten()
            kept_mask = kept_mask[:, cols]
        else:
            kept_mask, cols = torch.zeros(B, 0, dtype=torch.bool, device=device), None
        E, S = kept_mask.shape[1], max(len(s) for s in segs)
        decoder = StaticQwenLlamaDecoder(model, B, E + S + T)
        shape = (B, decoder.kv_heads, E + S + T, decoder.head_dim)
        p = next(model.parameters())
        decoder.k, decoder.v = [], []
        for i in range(len(model.model.layers)):
            for new, old in ((decoder.k, self.k), (decoder.v, self.v)):
                buf = torch.zeros(shape, dtype=p.dtype, device=device)
                if cols is not None:
                    buf[has_old, :, :E] = old[i][old_t[has_old]][:, :, cols]
                new.append(buf)
        ids, valid = _left_pad(segs, S, pad, device)
        pos = base_pos[:, None] + (valid.long().cumsum(-1) - 1).clamp(min=0)
        decoder.key_mask = torch.ones(B, E + S + T, dtype=torch.bool, device=device)
        decoder.key_mask[:, :E] = kept_mask
        was_training = model.training
        model.eval()
        try:
            logits = decoder.extend(ids, pos, valid, E)
            seen = _seen_mask(contexts, logits.shape[-1], device) if params.repetition_penalty != 1.0 else None
            # the new cache: every row as it leaves the decoder (finished rows are dropped mid-turn)
            new_k = [torch.empty(shape, dtype=p.dtype, device=device) for _ in decoder.k]
            new_v = [torch.empty(shape, dtype=p.dtype, device=device) for _ in decoder.v]
            new_mask = torch.empty(B, E + S + T, dtype=torch.bool, device=device)

            def save(batch_rows, local_rows):
                for i in range(len(new_k)):
                    new_k[i][batch_rows] = decoder.k[i][local_rows]
                    new_v[i][batch_rows] = decoder.v[i][local_rows]
                new_mask[batch_rows] = decoder.key_mask[local_rows]

            out = _decode(decoder, logits, pos[:, -1] + 1, E + S, params, tok, stops, pad, seen, on_drop=save)
        finally:
            model.train(was_training)
        completions = _completions(tok, params, out.tokens, out.logprobs, stops.tolist(), out.by_string)
        # a completion's last token was sampled but never fed: it opens the next turn's segment
        for b, (d, ctx, c) in enumerate(zip(dialogues, contexts, completions)):
            fed = len(c.token_ids) - 1
            new_mask[b, E + S + fed:] = False
            self.cached[d] = list(ctx) + c.token_ids[:fed]
        self.k, self.v, self.key_mask = new_k, new_v, new_mask
        self.row = {d: b for b, d in enumerate(dialogues)}
        self.cached = {d: self.cached[d] for d in dialogues}
        return completions


def _stop_string_rows(tokenizer, tokens: torch.Tensor, done: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
    """Rows (not yet done) whose text so far contains a stop string."""
    hit = torch.zeros_like(done)
    active = (~done).nonzero().flatten().tolist()
    if active:
        texts = tokenizer.batch_decode(tokens[active].tolist(), skip_special_tokens=False)
        for r, text in zip(active, texts):
            hit[r] = any(s in text for s in stop)
    return hit


def _completions(tokenizer, params, tokens, logps, stops, by_string) -> list[Completion]:
    results = []
    per = params.n
    for r, (toks, lps) in enumerate(zip(tokens, logps)):
        # cut at the first stop token (kept), or just after the token completing a stop string
        end = next((i + 1 for i, t in enumerate(toks) if t in stops), None)
        finish = "stop" if end is not None else "length"
        if by_string[r]:
            end = _stop_string_end(tokenizer, toks, params.stop)
            finish = "stop"
        end = end if end is not None else len(toks)
        toks, lps = toks[:end], lps[:end]
        text = tokenizer.decode([t for t in toks if t not in stops], skip_special_tokens=False)
        results.append(Completion(r // per, toks, text, lps, finish))
    return results


def _stop_string_end(tokenizer, toks: list[int], stop: tuple[str, ...]) -> int:
    for i in range(1, len(toks) + 1):
        if any(s in tokenizer.decode(toks[:i], skip_special_tokens=False) for s in stop):
            return i
    return len(toks)


def hf_generate(model, tokenizer, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
    """Fallback and speed baseline: `model.generate` (its scores are of the processed distribution)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [p for p in prompts for _ in range(params.n)]
    W = max(len(p) for p in rows)
    ids = torch.tensor([[pad] * (W - len(p)) + p for p in rows], device=device)
    attn = (torch.arange(W, device=device)[None] >= torch.tensor([W - len(p) for p in rows], device=device)[:, None])
    torch.manual_seed(params.seed)
    sample = params.temperature > 0
    kw = dict(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None) if sample else {}
    if params.repetition_penalty != 1.0:  # HF also counts left-padding tokens as seen: compare on equal-length prompts
        kw["repetition_penalty"] = params.repetition_penalty
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn.long(), max_new_tokens=params.max_new_tokens,
                             do_sample=sample, pad_token_id=pad, eos_token_id=stop_token_ids(model, tokenizer),
                             output_scores=True, return_dict_in_generate=True, **kw)
    seqs = out.sequences[:, W:].tolist()
    stops = stop_token_ids(model, tokenizer)
    logps = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)  # [B, T, V]
    lp = logps.gather(-1, out.sequences[:, W:, None]).squeeze(-1).tolist()
    return _completions(tokenizer, params, seqs, lp, stops, [False] * len(rows))
