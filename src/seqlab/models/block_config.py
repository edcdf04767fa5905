"""What a backbone's blocks and their mixers read: one config that every backbone's config derives from.

A block is x + mixer(norm(x)), then x + mlp(norm(x)) (decoder.Block). The decoder's ModelConfig and the
in-context learners' ICLModelConfig both derive from BlockConfig and are decorated with
`with_mixer_settings`, which adds one section per registered mixer, named after it: `model.mamba.d_state`,
`model.linear.feature_map`, `model.sliding_window.window` mean the same in every backbone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, model_validator

from seqlab.core.configs import Config
from seqlab.models.mixers.registry import check_mixers, parse_mixers

# Mixer settings that were keys of the model section itself before each mixer had a section of its own.
# config.json of the runs made then, and the scripts and YAML written then, say `model.d_state`; it reads
# as `model.mamba.d_state`, so an old run loads (and resumes) as the same config it was trained with.
FLAT_MIXER_KEYS = {"d_state": "mamba", "d_conv": "mamba", "expand": "mamba",
                   "feature_map": "linear", "feature_dim": "linear", "window": "sliding_window"}


class BlockConfig(Config):
    arch: str  # the backbone: each backbone's config narrows it and gives the default
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int | None = None  # default 4 * d_model
    mlp: Literal["gelu", "swiglu", "none"] = "gelu"  # none: blocks of a mixer alone (Mamba's own layout)
    # The mixer of each layer: names from MIXERS, comma-separated, cycled over the layers
    # ("mamba,attention" alternates). MambaFormer (Park et al. 2024): "mamba,attention,mamba,attention,...".
    mixers: str = "attention"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: str = "rope"  # each backbone narrows it to the schemes it implements
    relative_clip: int = 3  # coupling_relative: id differences beyond this share one bias
    log_length_scale: bool = False  # scalable softmax: attention logits times s_h * log(keys seen)
    bias: bool = False
    dropout: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _flat_mixer_keys(cls, data: Any) -> Any:
        """`d_state=8` -> `mamba: {d_state: 8}` (FLAT_MIXER_KEYS); both spellings at once must agree."""
        if not isinstance(data, dict) or not any(k in data for k in FLAT_MIXER_KEYS):
            return data
        out = dict(data)
        for key, name in FLAT_MIXER_KEYS.items():
            if key not in out:
                continue
            section = out.get(name, {})
            if isinstance(section, BaseModel):
                section = section.model_dump()
            if not isinstance(section, dict):
                return data  # the section's own validation says what is wrong with it
            value = out.pop(key)
            if key in section and section[key] != value:
                raise ValueError(f"{key}={value!r} and {name}.{key}={section[key]!r} disagree "
                                 f"({key} is the old spelling of {name}.{key}: give one)")
            out[name] = {**section, key: value}
        return out

    @model_validator(mode="after")
    def _check_block(self):
        for k in ("n_layers", "d_model", "n_heads", "relative_clip"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if self.d_mlp is not None and self.d_mlp < 0:
            raise ValueError("d_mlp must be >= 0 (0 or none: 4 * d_model)")
        if not 0 <= self.dropout < 1:  # nn.Dropout refuses anything else, but only when the model is built
            raise ValueError("dropout must lie in [0, 1)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.position == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rope needs an even head dimension")
        check_mixers(self)
        return self

    @property
    def hidden(self) -> int:
        return self.d_mlp or 4 * self.d_model

    def layer_mixers(self) -> list[str]:
        """The mixer name of each layer."""
        pattern = parse_mixers(self.mixers)
        return [pattern[i % len(pattern)] for i in range(self.n_layers)]
