"""Adding functions to a model's hook points, caching what they see, and running with them set.

Names are module paths (`hook_names(model)` lists them in forward order): `hook_embed`,
`blocks.{i}.hook_resid_pre`, `blocks.{i}.hook_mixer_out`, `blocks.{i}.hook_resid_mid`,
`blocks.{i}.hook_mlp_out`, `blocks.{i}.hook_resid_post`, and `blocks.{i}.mixer.hook_z` where the mixer
is attention. A hook function is `fn(activation, hook) -> tensor or None`: a tensor replaces the
activation, None leaves it (see `seqlab.models.hook_points`).

A hook point that fires more than once in a forward pass (the looped transformer's blocks fire once per
loop; `generate` fires every hook point once per new token) is cached as a list of its tensors in the
order they came; one that fires once is cached as the tensor itself.

Functions are added in the order given, after any already there, and `hooks` / `caching` always take
theirs off again, also when the forward pass raises. So `with hooks(model, patch): run_with_cache(...)`
caches the patched activations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from seqlab.core.errors import BadInput
from seqlab.core.registry import nearest
from seqlab.models.hook_points import HookFn, HookPoint, hook_points

Names = None | str | Iterable[str] | Callable[[str], bool]


def hook_names(model: nn.Module) -> list[str]:
    """Every hook point of `model`, in the order the forward pass reaches them."""
    return list(hook_points(model))


def _points(model: nn.Module) -> dict[str, HookPoint]:
    points = hook_points(model)
    for name, point in points.items():  # so a hook function can tell where it is called from
        point.name = name
    return points


# TransformerLens's words for what seqlab calls a mixer, so its users are pointed at the right name.
TL_WORDS = {"hook_attn_out": "hook_mixer_out", ".attn.": ".mixer."}


def _lookup(points: dict[str, HookPoint], name: str, model: nn.Module) -> HookPoint:
    if name in points:
        return points[name]
    ours = name
    for theirs, word in TL_WORDS.items():
        ours = ours.replace(theirs, word)
    near = ours if ours in points else nearest(name, points)
    hint = f"did you mean '{near}'?" if near else f"hook_names(model) lists its {len(points)}"
    raise BadInput(f"no hook point '{name}' in {type(model).__name__} ({hint})")


def _pairs(fwd_hooks) -> list[tuple[str, HookFn]]:
    """{name: fn} or [(name, fn), ...] (a list may name one hook point twice)."""
    pairs = list(fwd_hooks.items()) if isinstance(fwd_hooks, Mapping) else list(fwd_hooks)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and callable(pair[1])):
            raise BadInput(f"hooks are {{name: fn}} or [(name, fn), ...], got {pair!r}")
    return pairs


def select(model: nn.Module, names: Names = None) -> list[str]:
    """The hook names that `names` picks: None, every one; a name or a list of names, each checked; a
    function of the name, those for which it is true."""
    points = _points(model)
    if names is None:
        return list(points)
    if callable(names):
        return [n for n in points if names(n)]
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        _lookup(points, name, model)
    return names


@contextlib.contextmanager
def hooks(model: nn.Module, fwd_hooks):
    """Within the block, `fwd_hooks` ({name: fn} or [(name, fn), ...]) are set on `model`'s hook points."""
    points = _points(model)
    targets = [(_lookup(points, name, model), fn) for name, fn in _pairs(fwd_hooks)]  # every name checked first
    added: list[tuple[HookPoint, HookFn]] = []
    try:
        for point, fn in targets:
            point.fns.append(fn)
            added.append((point, fn))
        yield model
    finally:
        for point, fn in reversed(added):  # the last copy of fn: one an enclosing block added stays in place
            at = [j for j, f in enumerate(point.fns) if f is fn]
            if at:  # gone already if the block cleared the hook points itself
                del point.fns[at[-1]]


def clear_hooks(model: nn.Module) -> None:
    """Take every function off every hook point of `model` (after hook functions were added by hand)."""
    for point in hook_points(model).values():
        point.fns.clear()


def _store(cache: dict, name: str) -> HookFn:
    def store(x: torch.Tensor, hook: HookPoint) -> None:
        x = x.detach()  # not copied: the model never writes into an activation after making it
        if name not in cache:
            cache[name] = x
        elif isinstance(cache[name], list):
            cache[name].append(x)
        else:
            cache[name] = [cache[name], x]

    return store


@contextlib.contextmanager
def caching(model: nn.Module, names: Names = None):
    """Yields a dict that fills, as the model runs, with name -> detached activation (a list of them for
    a hook point that fires more than once). For methods other than forward: `model.loss`, `generate`."""
    cache: dict = {}
    with hooks(model, [(name, _store(cache, name)) for name in select(model, names)]):
        yield cache


def run_with_cache(model: nn.Module, *args, names: Names = None, **kwargs):
    """(model(*args, **kwargs), cache): the output, and name -> detached activation for the hook points
    `names` picks (all by default). Gradients still flow through the output."""
    with caching(model, names) as cache:
        out = model(*args, **kwargs)
    return out, cache


def run_with_hooks(model: nn.Module, *args, fwd_hooks, **kwargs):
    """model(*args, **kwargs) with `fwd_hooks` ({name: fn} or [(name, fn), ...]) set for this call only."""
    with hooks(model, fwd_hooks):
        return model(*args, **kwargs)
