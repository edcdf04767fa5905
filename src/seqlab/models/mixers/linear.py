"""Causal multi-head linear attention: softmax(q.k) replaced by a feature-map kernel phi(q).phi(k).

Katharopoulos et al. 2020 ("Transformers are RNNs") showed that with sim(q, k) = phi(q).phi(k) the
causal output

    y_t = sum_{j<=t} (phi(q_t).phi(k_j)) v_j / (phi(q_t) . sum_{j<=t} phi(k_j))

is a recurrence over a fixed-size state S_t = S_{t-1} + phi(k_t) v_t^T and z_t = z_{t-1} + phi(k_t),
so generation keeps F * head_dim (+ F) numbers per head whatever the length. Zoology and Based
(Arora et al. 2023, 2024) project queries and keys to a small feature dim d (16) and use the
2nd-order Taylor expansion of exp as the kernel, which recalls far better than elu(x)+1.

Feature maps phi: (..., d) -> (..., F):
  identity  phi(x) = x                                     F = d
  elu       phi(x) = elu(x) + 1 (Katharopoulos 2020)       F = d
  taylor    phi(x) = [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))]   F = 1 + d + d^2
            so phi(q).phi(k) = 1 + s + s^2 / 2 with s = q.k / sqrt(d): exp(s) to 2nd order (Based)

Normalization (divide by phi(q_t) . z_t + eps) defaults to on for elu and taylor, as in Katharopoulos
and in Based's reference mixer and training kernel (zoology's Based, fla's fused_chunk_based with
use_norm); both kernels are positive (taylor's 1 + s + s^2/2 >= 1/2), so the denominator is a sum of
positive terms. It defaults to off for identity: there phi(q).phi(k) has either sign and the
denominator can cross zero, where dividing blows up (eps does not help with a sign change).

Three computations of the same thing on already feature-mapped q, k (B, H, L, F) and v (B, H, L, hd):
  linear_attention_reference  the masked quadratic form, (tril(Q K^T) V); obviously correct
  linear_attention_recurrent  the token-by-token state update; used for decoding with a cache
  linear_attention_chunked    intra-chunk quadratic, inter-chunk state carry; used for training
The module ignores ctx.rope and ALiBi: position enters only through the decoder's embeddings (or not
at all, NoPE-style, where the causal sum itself orders tokens).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import PositiveInt

from seqlab.core.configs import Config
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.mixers.registry import mixer

FEATURE_MAPS = ("identity", "elu", "taylor")
State = tuple[torch.Tensor, torch.Tensor | None]  # S (B, H, F, hd), z (B, H, F) or None when not normalized


def feature_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """phi(x): (..., d) -> (..., feature_size(kind, d))."""
    if kind == "identity":
        return x
    if kind == "elu":
        return F.elu(x) + 1
    if kind == "taylor":
        d = x.shape[-1]
        outer = (x[..., :, None] * x[..., None, :]).flatten(-2)  # (..., d*d), x_i x_j
        ones = x.new_ones(*x.shape[:-1], 1)
        return torch.cat([ones, x / d**0.25, outer / (math.sqrt(2) * math.sqrt(d))], dim=-1)
    raise ValueError(f"unknown feature map '{kind}' (known: {', '.join(FEATURE_MAPS)})")


def feature_size(kind: str, d: int) -> int:
    return 1 + d + d * d if kind == "taylor" else d


def linear_attention_reference(q, k, v, normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """(B, H, L, F), (B, H, L, F), (B, H, L, hd) -> (B, H, L, hd): the L x L masked form."""
    L = q.shape[2]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B, H, L, L), phi(q_t).phi(k_j) for j <= t
    y = scores @ v
    if normalize:
        y = y / (scores.sum(-1, keepdim=True) + eps)
    return y


def _zero_state(q, v, normalize: bool) -> State:
    B, H, _, Fd = q.shape
    S = q.new_zeros(B, H, Fd, v.shape[-1])
    return S, (q.new_zeros(B, H, Fd) if normalize else None)


def linear_attention_recurrent(q, k, v, normalize: bool = True, eps: float = 1e-6,
                               state: State | None = None) -> tuple[torch.Tensor, State]:
    """One token at a time from `state` (zeros if None); returns y (B, H, L, hd) and the final state."""
    S, z = state if state is not None else _zero_state(q, v, normalize)
    ys = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]  # (B, H, F), (B, H, F), (B, H, hd)
        S = S + k_t[..., :, None] * v_t[..., None, :]  # (B, H, F, hd), out of place so autograd sees each step
        y_t = (q_t[..., None, :] @ S).squeeze(-2)  # (B, H, hd)
        if normalize:
            z = z + k_t
            y_t = y_t / ((q_t * z).sum(-1, keepdim=True) + eps)
        ys.append(y_t)
    return torch.stack(ys, dim=2), (S, z)


def linear_attention_chunked(q, k, v, normalize: bool = True, eps: float = 1e-6, chunk_size: int = 64,
                             state: State | None = None) -> tuple[torch.Tensor, State]:
    """Chunk-wise parallel form; same result and final state as the recurrence.

    Within a chunk of C tokens: the masked C x C form. Across chunks: the state before chunk n is
    the sum of phi(k) v^T over all earlier chunks, an exclusive cumulative sum, so every chunk is
    computed at once (no Python loop over the sequence). Cost O(L C F + L F hd) instead of O(L^2 F).
    """
    B, H, L, Fd = q.shape
    hd, C = v.shape[-1], chunk_size
    N = -(-L // C)  # chunks, the last one padded with zeros: a zero phi(k) adds nothing to S or z
    pad = N * C - L
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc, kc, vc = q.view(B, H, N, C, Fd), k.view(B, H, N, C, Fd), v.view(B, H, N, C, hd)
    S0, z0 = state if state is not None else _zero_state(q, v, normalize)

    kv = kc.transpose(-1, -2) @ vc  # (B, H, N, F, hd): each chunk's contribution to S
    # Shift by one chunk rather than subtract kv from an inclusive cumsum: subtraction would round.
    S_incl = kv.cumsum(2)
    S_before = S0[:, :, None] + torch.cat([torch.zeros_like(kv[:, :, :1]), S_incl[:, :, :-1]], dim=2)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B, H, N, C, C)
    y = scores @ vc + qc @ S_before  # (B, H, N, C, hd)
    z_final = None
    if normalize:
        ksum = kc.sum(3)  # (B, H, N, F)
        z_incl = ksum.cumsum(2)
        z_before = z0[:, :, None] + torch.cat([torch.zeros_like(ksum[:, :, :1]), z_incl[:, :, :-1]], dim=2)
        den = scores.sum(-1) + (qc @ z_before[..., None]).squeeze(-1)  # (B, H, N, C)
        y = y / (den[..., None] + eps)
        z_final = z0 + z_incl[:, :, -1]
    y = y.reshape(B, H, N * C, hd)[:, :, :L]
    return y, (S0 + S_incl[:, :, -1], z_final)


class LinearAttentionCache:
    """The recurrent state of every sequence in the batch: S (B, H, F, hd) and z (B, H, F)."""

    def __init__(self, batch: int, n_heads: int, n_features: int, head_dim: int, normalize: bool, device, dtype):
        # The state is a running sum over the whole sequence: in bf16 small late updates would round
        # away, so it is kept in at least float32.
        dtype = torch.promote_types(dtype, torch.float32)
        self.S = torch.zeros(batch, n_heads, n_features, head_dim, device=device, dtype=dtype)
        self.z = torch.zeros(batch, n_heads, n_features, device=device, dtype=dtype) if normalize else None
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the sequences `rows` (B',) of the batch, in that order."""
        self.S = self.S[rows]
        self.z = None if self.z is None else self.z[rows]

    def snapshot(self) -> tuple:
        return self.S.clone(), None if self.z is None else self.z.clone(), self.length

    def put_row(self, row: int, src: "LinearAttentionCache", src_row: int = 0) -> None:
        """Take sequence `src_row` of another cache into row `row` (the serving engine's slots)."""
        self.S[row] = src.S[src_row]
        if self.z is not None:
            self.z[row] = src.z[src_row]
        self.length = max(self.length, src.length)

    def restore(self, state: tuple) -> None:
        self.S, self.z, self.length = state[0].clone(), None if state[1] is None else state[1].clone(), state[2]


class LinearAttention(nn.Module):
    """Linear attention mixer: queries and keys at `feature_dim` per head, values at d_model / n_heads."""

    def __init__(self, d_model: int, n_heads: int, feature_map: str = "taylor", feature_dim: int | None = None,
                 normalize: bool | None = None, eps: float = 1e-6, chunk_size: int = 64, bias: bool = False):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature map '{feature_map}' (known: {', '.join(FEATURE_MAPS)})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.kind = feature_map
        # Based's 16 for taylor (F = 273 features); elu and identity keep the usual head dim (Katharopoulos).
        self.feature_dim = feature_dim or (16 if feature_map == "taylor" else self.head_dim)
        self.n_features = feature_size(feature_map, self.feature_dim)
        self.normalize = feature_map != "identity" if normalize is None else normalize
        self.eps, self.chunk_size = eps, chunk_size
        self.impl = "chunked"  # or "reference", "recurrent": the same function, for tests and timing
        qk = n_heads * self.feature_dim
        self.qkv = nn.Linear(d_model, 2 * qk + d_model, bias=bias)  # one matmul for q, k (feature_dim) and v (head_dim)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def state_size(self, seq_len: int) -> int:
        # S is F x hd per head, z is F more when normalizing; neither grows with the sequence.
        per_head = self.n_features * self.head_dim + (self.n_features if self.normalize else 0)
        return self.n_heads * per_head

    def init_cache(self, batch: int, max_len: int, device, dtype) -> LinearAttentionCache:
        # max_len is part of the mixer contract; a fixed-size state does not need it.
        return LinearAttentionCache(batch, self.n_heads, self.n_features, self.head_dim, self.normalize, device, dtype)

    def forward(self, x: torch.Tensor, ctx: SeqContext, cache: LinearAttentionCache | None = None) -> torch.Tensor:
        if getattr(ctx, "key_mask", None) is not None:  # an encoder-only model would silently get causal mixing
            raise NotImplementedError(f"{type(self).__name__} is causal only; ctx.key_mask is not supported")
        B, L, D = x.shape
        H, df, hd = self.n_heads, self.feature_dim, self.head_dim
        q, k, v = self.qkv(x).split([H * df, H * df, D], dim=-1)
        q = feature_map(q.view(B, L, H, df).transpose(1, 2), self.kind)  # (B, H, L, F)
        k = feature_map(k.view(B, L, H, df).transpose(1, 2), self.kind)  # (B, H, L, F)
        v = v.view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        norm, eps = self.normalize, self.eps
        if cache is not None:
            dt = cache.S.dtype
            q, k, v = q.to(dt), k.to(dt), v.to(dt)
            state = (cache.S, cache.z)
            if L == 1:  # a generated token: one step of the recurrence
                y, (cache.S, cache.z) = linear_attention_recurrent(q, k, v, norm, eps, state)
            else:  # a prompt: the parallel form, which also returns the state it ends in
                y, (cache.S, cache.z) = linear_attention_chunked(q, k, v, norm, eps, self.chunk_size, state)
            cache.length += L
        elif self.impl == "reference":
            y = linear_attention_reference(q, k, v, norm, eps)
        elif self.impl == "recurrent":
            y, _ = linear_attention_recurrent(q, k, v, norm, eps)
        else:
            y, _ = linear_attention_chunked(q, k, v, norm, eps, self.chunk_size)
        y = y.to(x.dtype).transpose(1, 2).reshape(B, L, D)
        return self.proj(y)


class LinearSettings(Config):
    """model.linear: the kernel of a linear-attention layer."""

    feature_map: Literal["identity", "elu", "taylor"] = "taylor"  # phi, above
    feature_dim: PositiveInt = 16  # query and key width per head before the feature map


@mixer("linear", "causal linear attention with a feature map: identity, elu+1, or Based's Taylor (Arora et al. 2024)",
       LinearSettings)
def build_linear(s: LinearSettings, block) -> LinearAttention:
    return LinearAttention(block.d_model, block.n_heads, feature_map=s.feature_map, feature_dim=s.feature_dim)
