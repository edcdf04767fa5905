"""What each attention head writes into the residual stream."""

from __future__ import annotations

import torch
import torch.nn as nn


def head_outputs(attn: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """(B, L, H, D): head h's share of the attention output, z[..., h, :] through its slice of the output
    projection. `z` is `hook_z` of `attn` (B, L, H, head_dim). Summed over heads, plus the projection's
    bias if it has one, this is the attention output (`hook_mixer_out`, before dropout)."""
    B, L, H, hd = z.shape
    W = attn.proj.weight.view(-1, H, hd)  # (D, H, hd): output = z.reshape(B, L, H * hd) @ W.view(D, -1).T
    return torch.einsum("blhe,dhe->blhd", z, W.to(z.dtype))
