"""Position helpers shared by mixers: rotary embeddings (RoPE), ALiBi and relative id biases."""

from __future__ import annotations

import math

import torch


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (B, 1, L, head_dim) for integer positions (B, L), Llama's layout."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (B, L, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, L, head_dim)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Head slopes of Press et al. 2022: a geometric sequence starting at 2^(-8/n)."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Additive attention bias (B, H, Lq, Lk): -slope * distance (the caller masks future keys)."""
    dist = q_pos[:, None, :, None] - k_pos[:, None, None, :]  # (B, 1, Lq, Lk)
    return -slopes.to(q_pos.device)[None, :, None, None] * dist.float()


def relative_id_bias(table: torch.Tensor, q_ids: torch.Tensor, k_ids: torch.Tensor, clip: int) -> torch.Tensor:
    """Additive attention bias (B, H, Lq, Lk) looked up by the difference of position ids.

    `table` (H, 2 * clip + 1) holds one bias per head for each id difference k_id - q_id in
    [-clip, clip]; larger differences take the end buckets. The caller masks future keys.
    """
    diff = (k_ids[:, None, :] - q_ids[:, :, None]).clamp(-clip, clip) + clip  # (B, Lq, Lk)
    return table[:, diff].permute(1, 0, 2, 3)
