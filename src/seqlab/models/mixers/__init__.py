"""Token mixers: each file one mixer with its own settings, registered by name (see registry.py)."""

from seqlab.models.mixers.registry import (
    MIXERS,
    MixerSpec,
    make_mixer,
    mixer,
    parse_mixers,
    restore_own_inits,
    with_mixer_settings,
)

# Importing a mixer's file registers it; this order is the order listings and error messages give.
from seqlab.models.mixers import attention, mamba, linear, sliding_window  # noqa: E402, F401  isort: skip

__all__ = ["MIXERS", "MixerSpec", "make_mixer", "mixer", "parse_mixers", "restore_own_inits", "with_mixer_settings"]
