"""Decoders behind `generate`: a static-cache fast path for Qwen2/Llama, and the generic HF path.

Both expose `prefill(ids [B, W], pos [B, W], key_mask [B, W]) -> logits [B, V]` for the
left-padded prompts and `step(tokens [B], pos [B], index) -> logits [B, V]` for one new token
written at cache slot `index`.

`StaticQwenLlamaDecoder` calls the model's own submodules (norms, projections, rotary
embedding, MLP, LM head) in the order of `transformers`' Qwen2/Llama decoder layer, with
K/V written into preallocated [B, kv_heads, W + max_new, head_dim] buffers and SDPA with
GQA. It skips what costs time at small scale in the generic forward: per-step causal-mask
construction, cache objects, output dataclasses. Architectures with anything else (q/k
norms, sliding windows, ...) get `HFDecoder`.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

_FAST_TYPES = ("Qwen2ForCausalLM", "LlamaForCausalLM")


def has_fast_path(model) -> bool:
    return type(model).__name__ in _FAST_TYPES and _plain_attention(model)


def make_decoder(model, batch: int, max_len: int):
    if has_fast_path(model):
        return StaticQwenLlamaDecoder(model, batch, max_len)
    return HFDecoder(model, max_len)


def _plain_attention(model) -> bool:
    cfg = model.config
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    layer = model.model.layers[0]
    if not all(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) or \
            hasattr(layer.self_attn, "q_norm"):
        return False
    # The fast path reads the projections' .weight directly: a LoRA-adapted projection (peft replaces
    # the Linear) would be sampled without its adapter, so anything but a plain Linear takes HFDecoder.
    projections = [getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    projections += [getattr(layer.mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return all(type(m) is torch.nn.Linear for m in projections)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class StaticQwenLlamaDecoder:
    can_select = True

    def __init__(self, model, batch: int, max_len: int):
        cfg = model.config
        self.model, self.inner = model, model.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.max_len, self.scale = max_len, self.head_dim ** -0.5
        # q/k/v and gate/up fused into one matmul each: fewer, larger GEMMs run closer to peak
        self.fused = []
        for layer in self.inner.layers:
            a, m = layer.self_attn, layer.mlp
            bias = None if a.q_proj.bias is None else torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
            self.fused.append((torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), bias,
                               torch.cat([m.gate_proj.weight, m.up_proj.weight])))
        # cos/sin of positions 0..n-1 ([n, head_dim]), filled on first use; False: call rotary_emb every time
        rope_type = getattr(self.inner.rotary_emb, "rope_type", "default")
        self.rope = None if rope_type in ("default", "linear", "llama3") else False
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.bias: torch.Tensor | None = None  # [B, max_len] additive key mask (0 / -inf) for decode steps

    def _rotary(self, h: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's rotary cos/sin at `pos` [B, T], looked up in a table of positions 0.. computed by
        `rotary_emb` itself once per decoder (element-wise the same values as calling it every step)."""
        if self.rope is False:  # a rotary embedding whose frequencies depend on the sequence (dynamic NTK, ...)
            return self.inner.rotary_emb(h, pos)
        # a row's positions never pass its cache slots (max_len), so decode steps need no check (no device sync)
        need = int(pos.max()) + 1 if pos.shape[1] > 1 or self.rope is None else 0
        if self.rope is None or self.rope[0].shape[0] < need:
            n = max(need, self.max_len)
            cos, sin = self.inner.rotary_emb(h, torch.arange(n, device=h.device)[None])
            self.rope = (cos[0], sin[0])
        return self.rope[0][pos], self.rope[1][pos]

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, start: int, mask: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        """mask: bool [B, 1, T, end], True = may attend (prefill, T > 1); bias: its additive form
        [B, 1, 1, end] (0 / -inf) for one decode token (T = 1)."""
        B, T = ids.shape
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        h = self.inner.embed_tokens(ids)
        cos, sin = self._rotary(h, pos)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        end = start + T
        for i, layer in enumerate(self.inner.layers):
            w_qkv, b_qkv, w_gu = self.fused[i]
            qkv = F.linear(layer.input_layernorm(h), w_qkv, b_qkv)
            q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
            q = q.view(B, T, H, D).transpose(1, 2)
            k = k.view(B, T, KV, D).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            self.k[i][:, :, start:end] = k * cos + _rotate_half(k) * sin
            self.v[i][:, :, start:end] = v.view(B, T, KV, D).transpose(1, 2)
            K, V = self.k[i][:, :, :end], self.v[i][:, :, :end]
            if T > 1:
                # prefill: SDPA's fused kernel never materializes the [B, H, T, end] scores, which
                # for long multi-turn dialogues cost 10x the time (and GBs of page faults) on CPU
                o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, scale=self.scale, enable_gqa=True)
            else:
                # one decode token: grouped-query attention as batched matmuls [B, KV, G, D] x [B, KV, D, end]
                qg = q.reshape(B, KV, H // KV * T, D)
                scores = (qg @ K.transpose(-1, -2)) * self.scale
                scores = scores.view(B, KV, H // KV, T, end) + bias[:, :, None]
                o = (torch.softmax(scores, dim=-1).view(B, KV, H // KV * T, end) @ V).view(B, H, T, D)
            h = h + layer.self_attn.o_proj(o.transpose(1, 2).reshape(B, T, H * D))
            gate, up = F.linear(layer.post_attention_layernorm(h), w_gu).chunk(2, dim=-1)
            h = h + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        h = self.inner.norm(h[:, -1])
        return self.model.lm_head(h).float()

    def prefill(self, ids, pos, key_mask, rows: torch.Tensor):
        """Distinct prompts are encoded once; batch row b continues prompt rows[b] (n samples, equal prompts)."""
        P, W = ids.shape
        p = next(self.model.parameters())
        shape = (P, self.kv_heads, self.max_len, self.head_dim)
        self.k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.inner.layers]
        self.v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.inner.layers]
        self.key_mask = torch.ones(P, self.max_len, dtype=torch.bool, device=p.device)
        self.key_mask[:, :W] = key_mask
        causal = torch.ones(W, W, dtype=torch.bool, device=ids.device).tril()
        mask = causal[None] & key_mask[:, None, :]
        # padding queries attend to themselves only, so no softmax row is empty (NaN)
        mask |= torch.eye(W, dtype=torch.bool, device=ids.device)[None]
        logits = self._forward(ids, pos, 0, mask=mask[:, None])
        self.select(rows)
        return logits.index_select(0, rows)

    def extend(self, ids, pos, valid, start: int):
        """Feed [B, S] left-padded new tokens at slots start..start+S on top of the cache (DialogueSampler).

        Each new token attends to the row's kept slots (`key_mask[:, :start]`, holes included as
        masked) and causally to the real new tokens before it."""
        B, S = ids.shape
        self.key_mask[:, start:start + S] = valid
        causal = torch.ones(S, S, dtype=torch.bool, device=ids.device).tril()
        new = (causal[None] & valid[:, None, :]) | torch.eye(S, dtype=torch.bool, device=ids.device)[None]
        mask = torch.cat([self.key_mask[:, None, :start].expand(B, S, start), new], dim=-1)
        logits = self._forward(ids, pos, start, mask=mask[:, None])
        self._sync_bias()
        return logits

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) cache rows: drops finished sequences from the batch."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.key_mask = self.key_mask.index_select(0, rows)
        self._sync_bias()

    def _sync_bias(self) -> None:
        """The additive form of key_mask, built once per prefill/extend/select instead of every decode step
        (slots from the first decode slot on are all True, so it stays valid while tokens are appended)."""
        self.bias = torch.zeros(self.key_mask.shape, dtype=self.k[0].dtype, device=self.key_mask.device)
        self.bias.masked_fill_(~self.key_mask, float("-inf"))

    def step(self, tokens, pos, index):
        return self._forward(tokens[:, None], pos[:, None], index, bias=self.bias[:, None, None, :index + 1])


class HFDecoder:
    """Any causal LM: the `transformers` forward with a DynamicCache and a preallocated attention mask."""

    can_select = False

    def __init__(self, model, max_len: int):
        self.model, self.max_len, self.past, self.attn = model, max_len, None, None
        # transformers 5.x names the KV cache `cache` (argument and output); `past_key_values` warns there and is
        # removed in 5.40, while the 4.x releases pyproject allows know only `past_key_values`
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
        self.cache_name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def prefill(self, ids, pos, key_mask, rows: torch.Tensor):
        ids, pos, key_mask = (x.index_select(0, rows) for x in (ids, pos, key_mask))
        B, W = ids.shape
        self.attn = torch.ones(B, self.max_len, dtype=torch.long, device=ids.device)
        self.attn[:, :W] = key_mask.long()
        out = self.model(input_ids=ids, attention_mask=self.attn[:, :W], position_ids=pos, use_cache=True)
        self.past = getattr(out, self.cache_name)
        return out.logits[:, -1].float()

    def step(self, tokens, pos, index):
        out = self.model(input_ids=tokens[:, None], attention_mask=self.attn[:, :index + 1], position_ids=pos[:, None],
                         use_cache=True, **{self.cache_name: self.past})
        self.past = getattr(out, self.cache_name)
        return out.logits[:, -1].float()
