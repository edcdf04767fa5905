"""Causal multi-head self-attention: the first mixer.

A mixer maps (B, L, D) -> (B, L, D) and reports `state_size(seq_len)`, the number of numbers it
keeps between tokens when it generates (for attention, the keys and values of every past token).
It takes a `SeqContext` (positions, precomputed RoPE tables) and optionally its own decoding cache.
Its hook point `hook_z` (seqlab.analysis) sees each head's output (B, L, H, head_dim) before the output
projection mixes the heads; `seqlab.analysis.head_outputs` turns it into each head's share of the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from seqlab.core.errors import BadInput
from seqlab.models.hook_points import HookPoint
from seqlab.models.kvcache.base import Cache
from seqlab.models.mixers.registry import mixer
from seqlab.models.positions import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    relative_id_bias,
)

# The relative bias table is stored divided by this gain. Adam moves a parameter by about lr per
# step whatever its scale, and a table needs entries of several units to keep attention sharp on
# long inputs: stored at 1/GAIN, it gets there GAIN times sooner.
REL_BIAS_GAIN = 10.0


@dataclass
class SeqContext:
    positions: torch.Tensor  # (B, L) index of each token in its sequence
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin: (B, 1, L, head_dim)
    pos_ids: torch.Tensor | None = None  # (B, L) the format's position ids (coupling_relative reads them)
    key_mask: torch.Tensor | None = None  # (B, 1, 1, L) bool, True where a key may be read (encoder-only models)


class KVCache:
    """Keys and values of past tokens (and their position ids), preallocated for `max_len` tokens."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int, device, dtype):
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.ids = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the sequences `rows` (B',) of the batch, in that order (beam search reorders its beams)."""
        self.k, self.v, self.ids = self.k[rows], self.v[rows], self.ids[rows]

    def snapshot(self) -> int:
        """What restore() needs to undo later appends: their length (append writes only past it)."""
        return self.length

    def restore(self, state: int) -> None:
        self.length = state

    def append(self, k: torch.Tensor, v: torch.Tensor, ids: torch.Tensor | None = None):
        """Keys, values and position ids of every token so far (ids only where given)."""
        n = k.shape[2]
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        if ids is not None:
            self.ids[:, self.length : self.length + n] = ids
        self.length += n
        return self.k[:, :, : self.length], self.v[:, :, : self.length], self.ids[:, : self.length]


class RowKVCache:
    """Keys and values for a batch whose rows are at different lengths: the serving engine's slots, each holding
    its own request. Row b's next tokens go at `lengths[b]`; a query sees its own row's keys up to itself."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int, device, dtype):
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.ids = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)

    def put_row(self, row: int, src: KVCache, src_row: int = 0) -> None:
        """Take sequence `src_row` of an ordinary cache (requests prefilled together) into slot `row`."""
        n = src.length
        if n > self.k.shape[2]:
            raise BadInput(f"a request of {n} tokens does not fit a slot of {self.k.shape[2]}")
        self.k[row, :, :n], self.v[row, :, :n] = src.k[src_row, :, :n], src.v[src_row, :, :n]
        self.ids[row, :n] = src.ids[src_row, :n]
        self.lengths[row] = n

    def clear_rows(self, rows: torch.Tensor) -> None:
        """Empty slots: what they held is never read again (a query reads only below its row's length)."""
        self.lengths[rows] = 0

    def append(self, k: torch.Tensor, v: torch.Tensor, ids: torch.Tensor | None):
        """Write L new tokens (B, H, L, hd) after each row's own; return keys, values, ids (B, ..., T) and the
        mask (B, 1, L, T) of the keys each query may read, T being the longest row's new length."""
        B, _, L, _ = k.shape
        if int(self.lengths.max()) + L > self.k.shape[2]:
            raise BadInput(f"a slot overflows its {self.k.shape[2]} tokens")
        at = self.lengths[:, None] + torch.arange(L, device=k.device)  # (B, L) where each new token goes
        rows = torch.arange(B, device=k.device)[:, None]
        self.k[rows, :, at], self.v[rows, :, at] = k.transpose(1, 2), v.transpose(1, 2)  # (B, L, H, hd) each
        if ids is not None:
            self.ids[rows, at] = ids
        T = int(self.lengths.max()) + L
        mask = torch.arange(T, device=k.device)[None, None, :] <= at[:, :, None]  # (B, L, T)
        self.lengths += L
        return self.k[:, :, :T], self.v[:, :, :T], self.ids[:, :T], mask[:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, position: str, bias: bool = False, dropout: float = 0.0,
                 relative_clip: int = 3, log_length_scale: bool = False):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.position = position
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.hook_z = HookPoint()
        if position == "alibi":
            self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)
        if log_length_scale:
            # Scalable softmax (Nakanishi 2025): logits times s * log(n) for a query that sees n keys, so
            # attention stays as peaked on long sequences as on the short ones it was trained on.
            self.length_scale = nn.Parameter(torch.full((n_heads,), 0.33))
        else:
            self.length_scale = None
        if position == "coupling_relative":
            # One learned bias per head and per id difference, clipped to [-clip, clip]: every larger
            # difference shares the end bucket, which training already teaches, so no length is unseen.
            self.relative_clip = relative_clip
            self.rel_bias = nn.Parameter(torch.zeros(n_heads, 2 * relative_clip + 1))

    def state_size(self, seq_len: int) -> int:
        return 2 * self.n_heads * self.head_dim * seq_len

    def init_cache(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(batch, self.n_heads, self.head_dim, max_len, device, dtype)

    def forward(self, x: torch.Tensor, ctx: SeqContext, cache: KVCache | None = None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, L, hd)
        if ctx.rope is not None:
            cos, sin = ctx.rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if isinstance(cache, Cache):  # a compressed or evicting cache attends over what it keeps
            return self._attend_cached(q, k, v, ctx, cache)
        if isinstance(cache, RowKVCache):  # rows at different lengths (seqlab.serve's engine)
            return self._attend_rows(q, k, v, ctx, cache)
        past = cache.length if cache is not None else 0
        k_ids = ctx.pos_ids
        if cache is not None:
            k, v, k_ids = cache.append(k, v, ctx.pos_ids)  # (B, H, past + L, hd)
        bias = None  # an additive bias on the logits (B or 1, H, Lq, Lk)
        if self.position in ("alibi", "coupling_relative"):
            k_pos = torch.arange(past + L, device=x.device)[None]
            if self.position == "alibi":
                bias = alibi_bias(self.slopes, ctx.positions[:1], k_pos)
            else:
                bias = relative_id_bias(self.rel_bias * REL_BIAS_GAIN, ctx.pos_ids, k_ids, self.relative_clip)
        if self.length_scale is not None:
            # The query at index t sees t + 1 keys (one key needs no scale: its weight is 1 anyway).
            n_keys = (ctx.positions[:1] + 1).clamp_min(2).to(q.dtype)  # (1, L)
            scale = self.length_scale[None, :, None, None] * n_keys.log()[:, None, :, None]  # (1, H, L, 1)
            q = q * scale
            if bias is not None:  # a bias is part of the logit, so it scales too
                bias = bias * scale
        mask, causal = None, past == 0 and L > 1
        if ctx.key_mask is not None:  # an encoder-only model: every key of the sequence, both directions
            mask, causal = ctx.key_mask, False
        if bias is not None:
            future = torch.arange(past + L, device=x.device)[None, :] > ctx.positions[0][:, None]  # (Lq, Lk)
            mask, causal = bias.to(q.dtype).masked_fill(future, float("-inf")), False
        elif past > 0 and L > 1:  # several new tokens after a cached prefix
            i = torch.arange(L, device=x.device)[:, None] + past
            mask = torch.arange(past + L, device=x.device)[None, :] <= i
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=drop)
        z = self.hook_z(y.transpose(1, 2))  # (B, L, H, hd): each head's output, before the heads are mixed
        return self.proj(z.reshape(B, L, D))

    def _attend_rows(self, q, k, v, ctx: SeqContext, cache: RowKVCache) -> torch.Tensor:
        """forward's attention where every row has its own positions (ctx.positions (B, L)) and cached length."""
        B, H, L, hd = q.shape
        k, v, k_ids, mask = cache.append(k, v, ctx.pos_ids)
        bias = None
        if self.position == "alibi":  # a row's key j sits at position j: every slot starts at 0
            bias = alibi_bias(self.slopes, ctx.positions, torch.arange(k.shape[2], device=q.device)[None])
        elif self.position == "coupling_relative":
            bias = relative_id_bias(self.rel_bias * REL_BIAS_GAIN, ctx.pos_ids, k_ids, self.relative_clip)
        if self.length_scale is not None:  # as in forward, with each row's own query index
            n_keys = (ctx.positions + 1).clamp_min(2).to(q.dtype)  # (B, L)
            scale = self.length_scale[None, :, None, None] * n_keys.log()[:, None, :, None]  # (B, H, L, 1)
            q = q * scale
            bias = None if bias is None else bias * scale
        attn = mask if bias is None else bias.to(q.dtype).masked_fill(~mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn)
        z = self.hook_z(y.transpose(1, 2))
        return self.proj(z.reshape(B, L, H * hd))

    def _attend_cached(self, q, k, v, ctx: SeqContext, cache: Cache) -> torch.Tensor:
        if self.position in ("alibi", "coupling_relative") or ctx.key_mask is not None:
            raise BadInput(f"a compressed KV cache attends without a logit bias; position {self.position!r} adds one")
        if self.length_scale is not None:  # as in forward: the query at index t sees t + 1 keys
            n_keys = (ctx.positions[:1] + 1).clamp_min(2).to(q.dtype)
            q = q * (self.length_scale[None, :, None, None] * n_keys.log()[:, None, :, None])
        B, H, L, hd = q.shape
        z = self.hook_z(cache.attend(q, k, v).transpose(1, 2))
        return self.proj(z.reshape(B, L, H * hd))


@mixer("attention", "causal softmax attention (SDPA), any position scheme")
def build_attention(settings: None, block) -> CausalSelfAttention:
    # No settings of its own: heads, positions, bias, dropout and the scalable softmax are the block's.
    return CausalSelfAttention(block.d_model, block.n_heads, block.position, block.bias, block.dropout,
                               block.relative_clip, block.log_length_scale)
