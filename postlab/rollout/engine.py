"""Batched sampling (interface used by trainers and evaluation).

`generate(model, tokenizer, prompts, params)` takes prompt token ids and returns one
`Completion` per (prompt, sample). Temperature 0 means greedy. This first implementation
uses a simple KV-cache loop; see the rollout issue for the fast engine.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclasses.dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length"


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    gen = torch.Generator(device="cpu").manual_seed(params.seed)
    expanded = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
    width = max(len(p) for _, p in expanded)
    ids = torch.full((len(expanded), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, (_, p) in enumerate(expanded):
        ids[r, width - len(p):] = torch.tensor(p)
        attn[r, width - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[:, -1].float()
    next_pos = position_ids[:, -1] + 1
    B = len(expanded)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens = [[] for _ in range(B)]
    lps = [[] for _ in range(B)]
    for _ in range(params.max_new_tokens):
        logp = torch.log_softmax(logits, -1)
        if params.temperature == 0:
            nxt = logp.argmax(-1)
        else:
            probs = torch.softmax(logits / params.temperature, -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(device)
        chosen = logp.gather(-1, nxt[:, None]).squeeze(-1)
        for r in range(B):
            if not done[r]:
                tokens[r].append(int(nxt[r]))
                lps[r].append(float(chosen[r]))
        done |= nxt == eos
        if done.all():
            break
        attn = torch.cat([attn, torch.ones(B, 1, dtype=attn.dtype, device=device)], 1)
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos[:, None], past_key_values=past,
                    use_cache=True)
        past, logits, next_pos = out.past_key_values, out.logits[:, -1].float(), next_pos + 1
    model.train(was_training)
    results = []
    for r, (pi, _) in enumerate(expanded):
        toks = tokens[r]
        finish = "stop" if toks and toks[-1] == eos else "length"
        text = tokenizer.decode([t for t in toks if t != eos], skip_special_tokens=False)
        results.append(Completion(pi, toks, text, lps[r], finish))
    return results
