"""Sliding-window causal attention: token t attends to tokens t - window + 1 .. t only.

Softmax attention whose memory is bounded (Beltagy 2020 Longformer, Mistral 2023; the local half of
Based, Arora 2024): generating keeps the keys and values of the last `window` tokens, so the state is
2 * H * hd * min(window, seq_len) numbers per sequence instead of growing with the sequence.

Positions: `rope` (rotary, through ctx.rope, as in CausalSelfAttention) and `alibi` act inside the
mixer; `none`, `learned`, `abacus` and `coupling` are embeddings the decoder adds, so the mixer sees
nothing (as `none`). `coupling_relative` and scalable softmax are not supported here.

Two computations of the same thing:
  sliding_window_reference  a loop over queries with an explicit softmax over each window; obvious
  SlidingWindowAttention    SDPA with a banded boolean (or ALiBi-biased) mask built from positions
The mask is L x L, so training costs O(L^2) like full attention; only decoding memory is bounded.

The decoding cache is a ring buffer of `window` slots: the key of position p lives in slot p % window,
and the mask is built from the position stored with each slot, so slot order never matters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import PositiveInt

from seqlab.core.configs import Config
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.mixers.registry import mixer
from seqlab.models.positions import alibi_bias, alibi_slopes, apply_rope

# Schemes the mixer supports; those other than rope and alibi live in the decoder's embeddings.
WINDOW_POSITIONS = ("none", "learned", "rope", "alibi", "abacus", "coupling")


def sliding_window_reference(q, k, v, window: int, slopes: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, L, hd) each -> (B, H, L, hd). `slopes` (H,): ALiBi's -slope * distance on the logits."""
    L, hd = q.shape[2], q.shape[3]
    ys = []
    for t in range(L):
        lo = max(0, t - window + 1)
        logits = (q[:, :, t, None] @ k[:, :, lo : t + 1].transpose(-1, -2)).squeeze(-2) / hd**0.5  # (B, H, t+1-lo)
        if slopes is not None:
            dist = torch.arange(t - lo, -1, -1, device=q.device, dtype=q.dtype)  # t - j for j = lo .. t
            logits = logits - slopes.to(q.dtype)[:, None] * dist
        ys.append((logits.softmax(-1)[..., None, :] @ v[:, :, lo : t + 1]).squeeze(-2))  # (B, H, hd)
    return torch.stack(ys, dim=2)


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """(Lq, Lk) True where query position i may see key position j: i - window < j <= i (j < 0: empty slot)."""
    i, j = q_pos[:, None], k_pos[None, :]
    return (j <= i) & (j > i - window) & (j >= 0)


class WindowKVCache:
    """Keys and values of the last `window` tokens in a ring buffer, with the position in each slot."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, window: int, device, dtype):
        self.k = torch.zeros(batch, n_heads, window, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((window,), -1, dtype=torch.long, device=device)  # -1: nothing stored yet
        self.window = window
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the sequences `rows` (B',) of the batch, in that order (the slots' positions are shared)."""
        self.k, self.v = self.k[rows], self.v[rows]

    def snapshot(self) -> tuple:
        return self.k.clone(), self.v.clone(), self.pos.clone(), self.length

    def restore(self, state: tuple) -> None:
        k, v, pos, self.length = state
        self.k, self.v, self.pos = k.clone(), v.clone(), pos.clone()

    def extend(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """Keys, values (B, H, window + L, hd) and positions (window + L,) that the new queries may read:
        the buffer as it was, then the new tokens. Then store the new tokens, of which only the last
        `window` can matter to any later query."""
        keys, values, k_pos = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2), torch.cat([self.pos, pos])
        n = min(k.shape[2], self.window)
        slots = pos[-n:] % self.window  # n consecutive positions: n distinct slots
        self.k[:, :, slots], self.v[:, :, slots], self.pos[slots] = k[:, :, -n:], v[:, :, -n:], pos[-n:]
        self.length += k.shape[2]
        return keys, values, k_pos


class SlidingWindowAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, window: int, position: str = "none", bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        if position not in WINDOW_POSITIONS:
            raise ValueError(f"sliding-window attention does not support position '{position}' "
                             f"(supported: {', '.join(WINDOW_POSITIONS)})")
        self.n_heads, self.head_dim, self.window = n_heads, d_model // n_heads, window
        self.position = position
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        if position == "alibi":
            self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def state_size(self, seq_len: int) -> int:
        # After seq_len tokens, the next one reads its own key and the window - 1 before it: those are
        # the numbers that must be kept (the cache's extra slot receives the arriving token's own).
        return 2 * self.n_heads * self.head_dim * min(self.window - 1, seq_len)

    def init_cache(self, batch: int, max_len: int, device, dtype) -> WindowKVCache:
        # `window` slots however long the generation: max_len is part of the contract, not needed here.
        return WindowKVCache(batch, self.n_heads, self.head_dim, self.window, device, dtype)

    def forward(self, x: torch.Tensor, ctx: SeqContext, cache: WindowKVCache | None = None) -> torch.Tensor:
        if getattr(ctx, "key_mask", None) is not None:  # an encoder-only model would silently get causal mixing
            raise NotImplementedError(f"{type(self).__name__} is causal only; ctx.key_mask is not supported")
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, L, hd)
        if ctx.rope is not None:
            cos, sin = ctx.rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q_pos = k_pos = ctx.positions[0]  # (L,) the decoder gives every row the same positions
        if cache is not None:
            k, v, k_pos = cache.extend(k, v, q_pos)  # (B, H, slots + L, hd)
        mask = window_mask(q_pos, k_pos, self.window)  # (Lq, Lk) bool
        if self.position == "alibi":
            bias = alibi_bias(self.slopes, q_pos[None], k_pos[None])  # (1, H, Lq, Lk)
            mask = bias.to(q.dtype).masked_fill(~mask, float("-inf"))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # every query sees itself
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.proj(y)


class SlidingWindowSettings(Config):
    """model.sliding_window: how far back a sliding-window layer reads."""

    window: PositiveInt = 64  # keys seen per query (itself included)


def check_block(s: SlidingWindowSettings, block) -> None:
    # Said at configuration time, in the config's words, rather than by the constructor at build time.
    if block.position not in WINDOW_POSITIONS or block.log_length_scale:
        raise ValueError(f"sliding_window attention takes position {', '.join(WINDOW_POSITIONS[:-1])} or "
                         f"{WINDOW_POSITIONS[-1]}, without log_length_scale")


@mixer("sliding_window", "causal softmax attention over the last `window` tokens", SlidingWindowSettings, check_block)
def build_sliding_window(s: SlidingWindowSettings, block) -> SlidingWindowAttention:
    # Bias and dropout stay the constructor's defaults (no bias, no dropout), as this mixer has always been built.
    return SlidingWindowAttention(block.d_model, block.n_heads, window=s.window, position=block.position)
