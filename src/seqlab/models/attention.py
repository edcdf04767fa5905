"""Causal multi-head self-attention: the first mixer.

A mixer maps (B, L, D) -> (B, L, D) and reports `state_size(seq_len)`, the number of numbers it
keeps between tokens when it generates (for attention, the keys and values of every past token).
It takes a `SeqContext` (positions, precomputed RoPE tables) and optionally its own decoding cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from seqlab.models.positions import alibi_bias, alibi_slopes, apply_rope


@dataclass
class SeqContext:
    positions: torch.Tensor  # (B, L) index of each token in its sequence
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin: (B, 1, L, head_dim)


class KVCache:
    """Keys and values of past tokens, preallocated for `max_len` tokens."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int, device, dtype):
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[2]
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, position: str, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.position = position
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        if position == "alibi":
            self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

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
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, past + L, hd)
        mask, causal = None, past == 0 and L > 1
        if self.position == "alibi":
            k_pos = torch.arange(past + L, device=x.device)[None].expand(B, -1)
            mask = alibi_bias(self.slopes, ctx.positions, k_pos).to(q.dtype)
            causal = False
        elif past > 0 and L > 1:  # several new tokens after a cached prefix
            i = torch.arange(L, device=x.device)[:, None] + past
            mask = torch.arange(past + L, device=x.device)[None, :] <= i
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.proj(y)
