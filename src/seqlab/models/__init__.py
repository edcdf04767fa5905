"""Models: mixers with one contract, blocks, backbones and heads."""

from __future__ import annotations

import difflib

from seqlab.errors import BadInput
from seqlab.models.decoder import FORMAT_POSITION_IDS, POSITIONS, Decoder, ModelConfig

MODELS = {"decoder": Decoder}
DESCRIPTIONS = {"decoder": "decoder-only transformer; positions: " + ", ".join(POSITIONS)}


def build(config: ModelConfig, vocab_size: int):
    if config.arch not in MODELS:
        near = difflib.get_close_matches(config.arch, list(MODELS), n=1)
        raise BadInput(f"unknown model '{config.arch}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    return MODELS[config.arch](config, vocab_size)


__all__ = ["Decoder", "ModelConfig", "MODELS", "build", "POSITIONS", "FORMAT_POSITION_IDS"]
