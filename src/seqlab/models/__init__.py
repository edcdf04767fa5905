"""Models: mixers with one contract, blocks, backbones and heads."""

from __future__ import annotations

from seqlab.core.errors import BadInput
from seqlab.core.registry import unknown_name
from seqlab.models.decoder import (
    FORMAT_POSITION_IDS,
    POSITIONS,
    TABLE_POSITIONS,
    Decoder,
    ModelConfig,
)
from seqlab.models.registry import MODELS

# Importing a backbone's file registers it; this order is the order `seqlab models` lists them in.
from seqlab.models import encoder_ntp, icl_transformer, lsa  # noqa: E402, F401  isort: skip

# What `seqlab models` prints: each registered backbone with its description.
DESCRIPTIONS = {name: MODELS.describe(name) for name in MODELS}


def token_models() -> list[str]:
    """The backbones that read token ids (model.arch of a text or token run)."""
    return [name for name, model in MODELS.items() if model.inputs == "tokens"]


def check_arch(name: str) -> None:
    tokens = token_models()
    if name in tokens:
        return
    if name in MODELS:
        raise BadInput(f"model '{name}' learns in context from prompts of vectors (a function-class task); "
                       f"a model of token ids is one of {', '.join(sorted(tokens))}")
    raise BadInput(unknown_name("model", name, sorted(tokens)))


def build(config: ModelConfig, vocab_size: int):
    check_arch(config.arch)
    return MODELS[config.arch](config, vocab_size)


__all__ = ["check_arch", "Decoder", "DESCRIPTIONS", "ModelConfig", "MODELS", "build", "token_models", "POSITIONS",
           "FORMAT_POSITION_IDS", "TABLE_POSITIONS"]
