"""Transformers that read vector-valued prompts: in-context learning of function classes.

Garg et al. 2022's protocol: a prompt of k pairs (x_i, y_i), x_i in R^d, becomes 2k tokens
x_1, [y_1, 0, ..., 0], x_2, [y_2, 0, ...], ...; one linear read-in maps both kinds of token to the
model width, and a linear read-out at each x token predicts that x's y from the pairs before it.
Every x_i is a query, so one forward pass scores every prefix length k = 0 .. n-1 at once.

  ICLTransformer    n pre-norm decoder blocks (the decoder's own `Block`), as Garg's GPT-2 backbone
  LoopedTransformer one block of n_layers applied b times with input injection, h_{t+1} = f(h_t + e),
                    h_0 = 0, read out after every loop (Yang et al. 2024); trained on the mean loss of
                    the last `loop_window` loops, evaluated at any number of loops

Hook points (seqlab.analysis): `hook_embed` (B, 2k, D), what the blocks read (read-in, positions, token
types, canon; the place to inject a task vector before any block), and each block's
(`blocks.i.hook_resid_pre`, ...). The looped model calls its blocks once per loop, so their hook points
fire once per loop and `run_with_cache` keeps a list with one tensor per loop; `hook_embed` fires once,
and what it returns is the e injected at every loop.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from seqlab.core.errors import BadInput
from seqlab.models.block_config import BlockConfig
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.decoder import RESIDUAL_OUTPUTS, Block, make_norm
from seqlab.models.hook_points import HookPoint
from seqlab.models.mixers.registry import make_mixer, restore_own_inits, with_mixer_settings
from seqlab.models.positions import rope_cos_sin
from seqlab.models.registry import MODELS

ICL_ARCHS = ("transformer", "looped")


@with_mixer_settings
class ICLModelConfig(BlockConfig):
    """The in-context learners': the block's settings and each mixer's section, as the decoder's, around a
    read-in and read-out of vectors. Park et al. 2024's Mamba and MambaFormer read the same prompts with
    model.mixers=mamba or mamba,attention (and position=none). In the looped model, n_layers counts the
    layers inside the one block that is looped."""

    arch: Literal["transformer", "looped"] = "transformer"
    position: Literal["learned", "none", "rope"] = "learned"  # Garg: GPT-2's learned positions
    n_dims: int = 20  # set from the task
    max_points: int = 101  # the learned position table holds 2 * max_points tokens
    # A learned embedding of the token's kind (x or y), added after the read-in. Pre-norm blocks see
    # LayerNorm(y * a) = sign(y) * LayerNorm(a) for a y token without one: the label's size is lost to
    # every attention layer until a bias or position embedding has grown to break the symmetry.
    token_types: bool = False
    # Kernel size of a causal depthwise convolution over the embeddings ("canon layer", Allen-Zhu 2025);
    # 0 = none (Garg's model). With 2, a y token sees its own x directly instead of waiting for an
    # attention head to learn to look one token back, which is most of the plateau of early training.
    canon: int = 0
    loops: int = 12  # looped: the number of loops b at the end of the loop curriculum
    loop_window: int = 12  # looped: the loss averages the last T loops (Yang et al. 2024)

    @model_validator(mode="after")
    def _check(self):
        for k in ("n_dims", "max_points", "loops", "loop_window"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if self.canon < 0:
            raise ValueError("canon must be >= 0 (0: no convolution)")
        return self


def masked_mse(preds: torch.Tensor, ys: torch.Tensor, scored: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over every point, or over the points where `scored` (B, k) is True."""
    if scored is None:
        return F.mse_loss(preds.float(), ys.float())
    err = (preds.float() - ys.float()) ** 2
    return (err * scored).sum() / scored.sum().clamp_min(1)


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, k, d), (B, k) -> (B, 2k, d): x_1, [y_1, 0..], x_2, [y_2, 0..], ... (Garg's _combine)."""
    B, k, d = xs.shape
    ys_wide = torch.cat([ys[..., None], xs.new_zeros(B, k, d - 1)], dim=2)  # (B, k, d)
    return torch.stack([xs, ys_wide], dim=2).reshape(B, 2 * k, d)


class _VectorIO(nn.Module):
    """Read-in, positions and read-out shared by both models."""

    inputs = "vectors"  # in-context prompts (see models/registry.py)

    def __init__(self, c: ICLModelConfig):
        super().__init__()
        self.config = c
        self.read_in = nn.Linear(c.n_dims, c.d_model)
        self.pos_emb = nn.Embedding(2 * c.max_points, c.d_model) if c.position == "learned" else None
        self.type_emb = nn.Embedding(2, c.d_model) if c.token_types else None
        self.canon = nn.Conv1d(c.d_model, c.d_model, c.canon, groups=c.d_model, bias=False) if c.canon else None
        self.norm = make_norm(c.norm, c.d_model)
        self.read_out = nn.Linear(c.d_model, 1)
        self.hook_embed = HookPoint()  # (B, 2k, D): what the first block reads

    def _init_weights(self, n_layers: int):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        if self.canon is not None:  # start as the identity on the current token plus a random look back
            with torch.no_grad():
                self.canon.weight.normal_(0.0, 0.5)
                self.canon.weight[:, :, -1] = 1.0
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(RESIDUAL_OUTPUTS):
                nn.init.normal_(p, std=0.02 / (2 * n_layers) ** 0.5)
        restore_own_inits(self)

    def embed(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, SeqContext]:
        c = self.config
        B, k, d = xs.shape
        if d != c.n_dims:
            raise ValueError(f"prompts have {d} dims, the model reads {c.n_dims}")
        if c.position == "learned" and k > c.max_points:
            raise ValueError(f"prompts of {k} points exceed model.max_points={c.max_points}")
        e = self.read_in(interleave(xs, ys))  # (B, 2k, D)
        positions = torch.arange(2 * k, device=xs.device)[None].expand(B, 2 * k)
        if self.pos_emb is not None:
            e = e + self.pos_emb(positions)
        if self.type_emb is not None:
            e = e + self.type_emb.weight.repeat(k, 1)[None]  # x, y, x, y, ...: (1, 2k, D)
        if self.canon is not None:  # causal: left padding only, so token t mixes tokens t-K+1 .. t
            e = self.canon(F.pad(e.transpose(1, 2), (self.canon.kernel_size[0] - 1, 0))).transpose(1, 2)
        e = self.hook_embed(e)
        head_dim = c.d_model // c.n_heads
        rope = rope_cos_sin(positions[:1], head_dim) if c.position == "rope" else None
        return e, SeqContext(positions=positions, rope=rope)

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 2k, D) -> (B, k): the read-out at the x tokens (even indices)."""
        return self.read_out(self.norm(h[:, ::2]))[..., 0]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _blocks(c: ICLModelConfig) -> nn.ModuleList:
    return nn.ModuleList(Block(c, make_mixer(name, c)) for name in c.layer_mixers())


@MODELS.register(name="transformer",
                 description="in-context learner: read-in, decoder blocks, read-out at each x (Garg et al. 2022)")
class ICLTransformer(_VectorIO):
    def __init__(self, config: ICLModelConfig):
        super().__init__(config)
        self.blocks = _blocks(config)
        self._init_weights(config.n_layers)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None) -> torch.Tensor:
        """Predictions (B, k): entry i is the prediction of y_i from pairs < i and x_i."""
        h, ctx = self.embed(xs, ys)
        for block in self.blocks:
            h = block(h, ctx)
        return self.predict(h)

    def loss(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        """Squared error averaged over every prefix (every x_i is a query), or over the `scored` ones."""
        return masked_mse(self(xs, ys), ys, scored)


@MODELS.register(name="looped",
                 description="in-context learner: one block looped b times with input injection (Yang et al. 2024)")
class LoopedTransformer(_VectorIO):
    def __init__(self, config: ICLModelConfig):
        super().__init__(config)
        self.blocks = _blocks(config)
        self._init_weights(config.n_layers)

    def loop_outputs(self, xs: torch.Tensor, ys: torch.Tensor, loops: int) -> list[torch.Tensor]:
        """Predictions (B, k) after each of `loops` iterations of h <- f(h + e), from h = 0."""
        e, ctx = self.embed(xs, ys)
        h = torch.zeros_like(e)
        outs = []
        for _ in range(loops):
            h = h + e  # input injection: every loop sees the prompt again
            for block in self.blocks:
                h = block(h, ctx)
            outs.append(self.predict(h))
        return outs

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None) -> torch.Tensor:
        return self.loop_outputs(xs, ys, loops or self.config.loops)[-1]

    def loss(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        """Squared error averaged over every (scored) prefix and over the last `loop_window` loops."""
        b = loops or self.config.loops
        outs = self.loop_outputs(xs, ys, b)[-self.config.loop_window:]
        return torch.stack([masked_mse(o, ys, scored) for o in outs]).mean()


def build_icl_model(config):
    """The model for an ICLModelConfig or an LSAConfig (linear self-attention), by its arch."""
    model = MODELS.get(config.arch)
    if model.inputs != "vectors":
        raise BadInput(f"model '{config.arch}' reads token ids, not in-context prompts of vectors")
    return model(config)
