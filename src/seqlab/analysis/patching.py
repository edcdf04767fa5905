"""Hook functions for activation patching: write a vector at one position, or a whole cached activation.

Activations are (B, L, *rest): (B, L, D) for the residual stream and the mixer and MLP outputs,
(B, L, H, head_dim) for `hook_z`. The functions return a patched copy; the original tensor is left
as it was, since autograd may still need it.
"""

from __future__ import annotations

import torch

from seqlab.core.errors import BadInput
from seqlab.models.hook_points import HookFn, HookPoint

MODES = ("replace", "add")


def _where(hook: HookPoint) -> str:
    return hook.name or "hook point"


def patch_vector(vector: torch.Tensor, position: int | torch.Tensor, mode: str = "replace") -> HookFn:
    """A hook function that replaces (or adds to) the activation at `position` with `vector`.

    vector: (*rest), the same for every row, or (B, *rest), one per row.
    position: an int (negative counts from the end), or a (B,) tensor of indices, one per row.
    """
    if mode not in MODES:
        raise BadInput(f"patch mode '{mode}' is not one of {', '.join(MODES)}")

    def patch(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        B, L, rest = act.shape[0], act.shape[1], tuple(act.shape[2:])
        v = vector.to(device=act.device, dtype=act.dtype)
        if tuple(v.shape) == rest:
            v = v.expand(B, *rest)
        elif tuple(v.shape) != (B, *rest):
            raise BadInput(f"{_where(hook)}: a vector of shape {tuple(vector.shape)} does not fit activations of "
                           f"shape {tuple(act.shape)} (give {rest} or {(B, *rest)})")
        if not (isinstance(position, torch.Tensor) and position.dim() > 0):
            # One index for every row, checked in Python: no device sync, no graph break under torch.compile.
            outside = not -L <= int(position) < L
            pos = torch.full((B,), int(position), device=act.device)
        else:
            pos = position.to(act.device).long()
            if pos.shape != (B,):
                raise BadInput(f"{_where(hook)}: positions of shape {tuple(pos.shape)} for a batch of {B} "
                               f"(give an int or ({B},))")
            outside = bool(((pos < -L) | (pos >= L)).any())
        if outside:
            raise BadInput(f"{_where(hook)}: position {position} is outside a sequence of {L}")
        rows = torch.arange(B, device=act.device)
        out = act.clone()
        out[rows, pos] = v if mode == "replace" else act[rows, pos] + v
        return out

    return patch


def patch_activation(cached: torch.Tensor) -> HookFn:
    """A hook function that replaces the whole activation with `cached` (from `run_with_cache` on another
    input, say). Nothing flows back through it to the layers before."""

    def patch(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        if cached.shape != act.shape:
            raise BadInput(f"{_where(hook)}: a cached activation of shape {tuple(cached.shape)} cannot replace one "
                           f"of shape {tuple(act.shape)}")
        return cached.to(device=act.device, dtype=act.dtype)

    return patch
