"""Named places in a model's forward pass where analysis code can read or rewrite an activation.

A `HookPoint` is an identity module: `x = self.hook_resid_pre(x)`. Its name is its module path
(`blocks.0.hook_resid_pre`), so the names follow the model's own structure and need no registry.
With no function set it returns its input at the cost of one `if`; with functions set it calls
each in turn, `fn(x, hook) -> tensor or None`, where a tensor replaces x for the functions after
it and for the rest of the model, and None leaves x as it was (a function that only reads).

It holds no parameters or buffers, so state dicts and saved checkpoints are the same with or
without hook points. `seqlab.analysis` adds and removes the functions; a module called more than
once per forward pass (the looped transformer's blocks, a decoder generating token by token) fires
its hook points every time.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class HookPoint(nn.Module):
    def __init__(self):
        super().__init__()
        self.fns: list[HookFn] = []
        self.name: str | None = None  # set by seqlab.analysis from the model it is reached from

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fns:  # the common case: no analysis running, nothing to pay for
            return x
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    def extra_repr(self) -> str:
        return f"{len(self.fns)} fn" if self.fns else ""


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of `model`, by module path, in the order modules were registered."""
    return {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}


def _identity(x):
    return x


def strip_hook_points(model: nn.Module) -> nn.Module:
    """Replace every HookPoint of `model` (in place) by a plain identity function: the cheapest stand-in
    for "no hook point here", against which benchmarks and tests measure what hook points cost."""
    for name in list(hook_points(model)):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        delattr(parent, attr)  # removes the child module, so the attribute can hold a function
        setattr(parent, attr, _identity)
    return model
