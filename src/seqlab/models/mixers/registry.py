"""The mixer registry: every token mixer a layer of a backbone can use, built from one ModelConfig.

A mixer maps (B, L, D) -> (B, L, D), reports `state_size(seq_len)` (numbers kept per sequence between
tokens while generating) and makes its own decoding cache (`init_cache`). Hybrids are configuration:
`model.mixers="mamba,attention"` alternates the two over the layers.
"""

from __future__ import annotations

import difflib

import torch.nn as nn

from seqlab.core.errors import BadInput

MIXERS = {
    "attention": "causal softmax attention (SDPA), any position scheme",
    "mamba": "Mamba-1 selective state space model (Gu & Dao 2023), chunked scan on CPU, mamba-ssm's kernel on CUDA",
    "linear": "causal linear attention with a feature map: identity, elu+1, or Based's Taylor (Arora et al. 2024)",
    "sliding_window": "causal softmax attention over the last `window` tokens",
}


def parse_mixers(text: str) -> list[str]:
    """'mamba, attention' -> ['mamba', 'attention'], every name checked against MIXERS."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError("mixers needs at least one mixer name")
    for name in names:
        if name not in MIXERS:
            near = difflib.get_close_matches(name, list(MIXERS), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(MIXERS)})"
            raise ValueError(f"unknown mixer '{name}'{hint}")
    return names


def restore_own_inits(model: nn.Module) -> None:
    """After a model's blanket initialisation, let each module with an initialisation of its own (Mamba's
    dt and A, a canon convolution) put it back."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_special_parameters"):
            m.reset_special_parameters()


def make_mixer(name: str, c) -> nn.Module:
    """The mixer `name` at the sizes of ModelConfig `c`."""
    if name == "attention":
        from seqlab.models.mixers.attention import CausalSelfAttention

        return CausalSelfAttention(c.d_model, c.n_heads, c.position, c.bias, c.dropout, c.relative_clip, c.log_length_scale)
    if name == "mamba":
        from seqlab.models.mixers.mamba import Mamba

        return Mamba(c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
    if name == "linear":
        from seqlab.models.mixers.linear import LinearAttention

        return LinearAttention(c.d_model, c.n_heads, feature_map=c.feature_map, feature_dim=c.feature_dim)
    if name == "sliding_window":
        from seqlab.models.mixers.sliding_window import SlidingWindowAttention

        return SlidingWindowAttention(c.d_model, c.n_heads, window=c.window, position=c.position)
    raise BadInput(f"unknown mixer '{name}'")
