"""Models: mixers with one contract, blocks, backbones and heads."""

from __future__ import annotations

import difflib

from seqlab.core.errors import BadInput
from seqlab.models.decoder import (
    FORMAT_POSITION_IDS,
    POSITIONS,
    TABLE_POSITIONS,
    Decoder,
    ModelConfig,
)
from seqlab.models.encoder_ntp import EncoderNTP
from seqlab.models.mixers.registry import MIXERS

MODELS = {"decoder": Decoder, "encoder": EncoderNTP}
DESCRIPTIONS = {
    "decoder": "decoder-only backbone; mixers per layer (model.mixers): " + ", ".join(MIXERS)
               + "; positions: " + ", ".join(POSITIONS),
    "encoder": "encoder-only next-token prediction: a bidirectional pass over each prefix (Ewer et al. 2025)",
    # Models of vector-valued prompts (in-context function classes), chosen with model.arch in an ICL run.
    "transformer": "in-context learner: read-in, decoder blocks, read-out at each x (Garg et al. 2022)",
    "looped": "in-context learner: one block looped b times with input injection (Yang et al. 2024)",
    "lsa": "in-context learner: linear self-attention, no softmax or MLP (von Oswald 2023; Giannou 2025)",
}


def check_arch(name: str) -> None:
    if name not in MODELS:
        near = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(sorted(MODELS))})"
        raise BadInput(f"unknown model '{name}'{hint}")


def build(config: ModelConfig, vocab_size: int):
    check_arch(config.arch)
    return MODELS[config.arch](config, vocab_size)


__all__ = ["check_arch", "Decoder", "ModelConfig", "MODELS", "build", "POSITIONS", "FORMAT_POSITION_IDS", "TABLE_POSITIONS"]
