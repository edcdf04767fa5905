"""Fused fast paths, each beside the plain PyTorch it must match (tests check both agree).

`swiglu(h)`: silu(gate) * up for h = [gate, up] along the last dimension. Autograd through
`h.chunk(2)` ends its backward with a concatenation of the two halves' gradients, a full copy of
the widest activation in the model; this backward writes both halves into one buffer instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_reference(h: torch.Tensor) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(h, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h, act = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        grad_h = torch.empty_like(h)
        d_gate, d_up = grad_h.chunk(2, dim=-1)  # views: writing them fills grad_h
        torch.mul(grad, act, out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=d_gate)
        return grad_h


def swiglu(h: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():  # the compiler fuses the plain form better than it can this one
        return swiglu_reference(h)
    return _SwiGLU.apply(h)
