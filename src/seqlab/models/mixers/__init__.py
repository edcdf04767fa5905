"""Token mixers: each file one mixer with its own settings, registered by name (see registry.py)."""

from seqlab.models.mixers.registry import MIXERS, make_mixer, parse_mixers, restore_own_inits

__all__ = ["MIXERS", "make_mixer", "parse_mixers", "restore_own_inits"]
