"""The mixer registry: every token mixer a layer of a backbone can use, each with its own settings.

A mixer maps (B, L, D) -> (B, L, D), reports `state_size(seq_len)` (numbers kept per sequence between
tokens while generating) and makes its own decoding cache (`init_cache`). Hybrids are configuration:
`model.mixers="mamba,attention"` alternates the two over the layers.

Each mixer file declares its settings (a Config) and registers a builder:

    class MambaSettings(Config):
        d_state: PositiveInt = 16

    @mixer("mamba", "Mamba-1 selective state space model", MambaSettings)
    def build_mamba(s: MambaSettings, block) -> nn.Module:
        return Mamba(block.d_model, d_state=s.d_state)

`with_mixer_settings` gives a backbone's config one section per mixer with settings, named after the mixer
(`model.mamba.d_state=8`); `block` is that config, for the sizes every mixer shares (d_model, n_heads, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn
from pydantic import Field, create_model

from seqlab.core.configs import Config
from seqlab.core.registry import Registry


@dataclass(frozen=True)
class MixerSpec:
    name: str
    settings: type[Config] | None  # the section model.<name>; None: the block's sizes are all it reads
    build: Callable[[Any, Any], nn.Module]  # (settings or None, block config) -> the mixer
    # (settings or None, block config) -> None, or ValueError for block settings the mixer cannot take
    check: Callable[[Any, Any], None] | None = None

    def settings_of(self, block) -> Config | None:
        return None if self.settings is None else getattr(block, self.name)


# Listed in registration order (the order of the imports in mixers/__init__.py), as `seqlab models` shows them.
MIXERS: Registry[MixerSpec] = Registry("mixer", sort_known=False)


def mixer(name: str, description: str, settings: type[Config] | None = None,
          check: Callable[[Any, Any], None] | None = None):
    """Register the decorated builder `(settings, block config) -> nn.Module` as the mixer `name`."""

    def add(build):
        MIXERS.register(MixerSpec(name, settings, build, check), description=description)
        return build

    return add


def with_mixer_settings(cls: type[Config]) -> type[Config]:
    """`cls` with a section of settings per registered mixer that has any, named after the mixer; a class
    decorator on each backbone's config, so every mixer's settings work in every backbone."""
    sections = {name: (spec.settings, Field(default_factory=spec.settings))
                for name, spec in MIXERS.items() if spec.settings is not None}
    clash = sorted(set(sections) & set(cls.model_fields))
    if clash:
        raise TypeError(f"{cls.__name__} has fields named like the mixers {', '.join(clash)}")
    made = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__, **sections)
    made.__qualname__ = cls.__qualname__  # pickle finds the decorated class under its own name
    return made


def parse_mixers(text: str) -> list[str]:
    """'mamba, attention' -> ['mamba', 'attention'], every name checked against MIXERS."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError("mixers needs at least one mixer name")
    for name in names:
        if name not in MIXERS:
            raise ValueError(MIXERS.unknown(name))
    return names


def check_mixers(block) -> list[str]:
    """The mixer names of `block.mixers`, after each mixer has checked the block's settings it reads."""
    names = parse_mixers(block.mixers)
    for name in dict.fromkeys(names):
        spec = MIXERS[name]
        if spec.check is not None:
            spec.check(spec.settings_of(block), block)
    return names


def restore_own_inits(model: nn.Module) -> None:
    """After a model's blanket initialisation, let each module with an initialisation of its own (Mamba's
    dt and A, a canon convolution) put it back."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_special_parameters"):
            m.reset_special_parameters()


def make_mixer(name: str, block) -> nn.Module:
    """The mixer `name` at the sizes of the block config `block`, with its settings there."""
    spec = MIXERS.get(name)
    return spec.build(spec.settings_of(block), block)
