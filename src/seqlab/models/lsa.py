"""Linear self-attention (LSA): attention without softmax, MLP or norms, over one token per example.

The layer (von Oswald et al. 2023, "Transformers learn in-context by gradient descent"; the same
layer, with the query masked out of the keys, in Ahn et al. 2023 and Zhang, Frei & Bartlett 2023):

    Z <- Z + (1/n) sum_h W_PV^h Z M (Z^T W_KQ^h Z)        Z: (D, L), one token per column

M = diag(1, ..., 1, 0) keeps the last token (the query) out of the keys and values, and n is the
number of tokens M keeps. Token t receives (1/n) sum_h W_PV^h C W_KQ^h z_t with C = sum_j z_j z_j^T
over the kept tokens, so a layer is a cubic polynomial of its input; W_KQ = W_K^T W_Q and
W_PV = P W_V are learned as full D x D matrices, as in the papers.

A prompt of k pairs (x_i, y_i), x_i in R^d, is k tokens z_i = [x_i; y_i] in R^(d+1); the query's y
slot holds 0, so nothing the model computes depends on the hidden label. The prediction is read
off the query's y slot with von Oswald's sign, y_hat = -Z[d, k-1]: their one-step gradient-descent
construction writes -w^T x_query there.

Giannou et al. 2025 ("How Well Can Transformers Emulate In-context Newton's Method?", AISTATS;
arXiv 2403.03183) train the same kind of stack for in-context linear regression; their code
(github.com/Leiay/icl_newton) differs in that tokens are [0 (10 dims); x; y] mapped to width 64 by a
learned read-in, attention has 4 heads, biases and a 1/sqrt(head dim) scale, no mask and no 1/n,
activations are clipped at 10, and a learned read-out gives the prediction. `newton_construction`
builds the paper's hand-set weights that run Newton's iteration for the matrix inverse.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from seqlab.core.configs import Config
from seqlab.models.registry import MODELS


class LinearSelfAttention(nn.Module):
    """One LSA layer on tokens stored as rows: (B, L, D) -> (B, L, D), residual included."""

    def __init__(self, d_token: int, n_heads: int = 1, mask_last: bool = True, init_std: float = 0.02):
        super().__init__()
        self.d_token, self.n_heads, self.mask_last = d_token, n_heads, mask_last
        self.w_kq = nn.Parameter(torch.randn(n_heads, d_token, d_token) * init_std)  # (H, D, D)
        self.w_pv = nn.Parameter(torch.randn(n_heads, d_token, d_token) * init_std)  # (H, D, D)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, L, D = z.shape
        keys = z[:, :-1] if self.mask_last else z  # (B, n, D): the tokens M keeps
        n = keys.shape[1]
        if n == 0:
            raise ValueError("linear self-attention needs at least one token besides the masked query")
        second_moment = keys.transpose(1, 2) @ keys  # (B, D, D)  C = sum_j z_j z_j^T
        # Token t gets sum_h W_PV^h C W_KQ^h z_t; as a row, z_t^T sum_h W_KQ^hT C W_PV^hT (C is symmetric).
        mix = self.w_kq.transpose(1, 2)[None] @ second_moment[:, None] @ self.w_pv.transpose(1, 2)[None]  # (B, H, D, D)
        return z + z @ mix.sum(1) / n  # (B, L, D)


class LSAConfig(Config):
    arch: Literal["lsa"] = "lsa"
    n_dims: int = 10  # d: tokens are [x; y] in R^(d+1)
    n_layers: int = 3
    n_heads: int = 1
    # Every W_KQ and W_PV entry starts as N(0, init_std^2). Zero is a stationary point of the loss (each
    # layer's update is a product of the two), so the init must be non-zero; small keeps the start
    # close to the identity map, and Adam's step size does not shrink with the gradient.
    init_std: float = 0.02
    mask_query: bool = True  # keep the query token out of the keys and values (M above)
    # Zero coordinates in front of each token, [0 (scratch); x; y], as in Giannou et al.'s code: room for
    # the layers to write intermediate results (the Newton construction needs 4d of it).
    scratch: int = 0
    # Clamp every activation to [-clip, clip] after each layer (Giannou et al.'s code clips at 10): a
    # stack of cubic layers is a polynomial of degree 3^depth, and one large prompt can blow it up.
    clip: float | None = None

    @model_validator(mode="after")
    def _check(self):
        for k in ("n_dims", "n_layers", "n_heads"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if self.scratch < 0:
            raise ValueError("scratch must be >= 0")
        if self.clip is not None and self.clip <= 0:
            raise ValueError("clip must be positive (or none)")
        if self.init_std < 0:
            raise ValueError("init_std must be non-negative")
        return self


def prompt_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, k, d), (B, k) -> (B, k, d+1): z_i = [x_i; y_i], with the last (query) y slot set to 0."""
    ys_seen = torch.cat([ys[:, :-1], ys.new_zeros(ys.shape[0], 1)], dim=1)  # (B, k)
    return torch.cat([xs, ys_seen[..., None].to(xs.dtype)], dim=2)


@MODELS.register(name="lsa", description="in-context learner: linear self-attention, no softmax or MLP "
                                          "(von Oswald 2023; Giannou 2025)")
class LinearTransformer(nn.Module):
    """A stack of LSA layers over the prompt's tokens; predicts the last y from the first k-1 pairs."""

    inputs = "vectors"  # in-context prompts (see models/registry.py)

    def __init__(self, config: LSAConfig):
        super().__init__()
        c = self.config = config
        self.layers = nn.ModuleList(
            LinearSelfAttention(c.scratch + c.n_dims + 1, c.n_heads, c.mask_query, c.init_std) for _ in range(c.n_layers)
        )

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if xs.shape[-1] != self.config.n_dims:
            raise ValueError(f"prompts have {xs.shape[-1]} dims, the model reads {self.config.n_dims}")
        z = prompt_tokens(xs, ys)  # (B, k, d+1)
        if self.config.scratch:
            z = torch.cat([z.new_zeros(*z.shape[:2], self.config.scratch), z], dim=2)  # (B, k, scratch+d+1)
        return z

    def _clip(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.config.clip is None else z.clamp(-self.config.clip, self.config.clip)

    def predictions_by_layer(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, n_layers): the prediction read after each layer (to set beside steps of an algorithm)."""
        z = self._tokens(xs, ys)  # (B, k, d+1)
        preds = []
        for layer in self.layers:
            z = self._clip(layer(z))
            preds.append(-z[:, -1, -1])
        return torch.stack(preds, dim=1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None) -> torch.Tensor:
        """(B, k, d), (B, k) -> (B,): the prediction of ys[:, -1], which the model never reads.

        `loops` is accepted for the trainer's uniform call (xs, ys, loops) and ignored."""
        z = self._tokens(xs, ys)  # (B, k, d+1)
        for layer in self.layers:
            z = self._clip(layer(z))
        return -z[:, -1, -1]  # von Oswald's sign: the query's y slot holds -y_hat

    def loss(self, xs: torch.Tensor, ys: torch.Tensor, loops: int | None = None,
             scored: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error of the prediction of the last point (of prompts whose last point is scored)."""
        if scored is None:
            return F.mse_loss(self(xs, ys).float(), ys[:, -1].float())
        keep = scored[:, -1].float()
        return (((self(xs, ys).float() - ys[:, -1].float()) ** 2) * keep).sum() / keep.sum().clamp_min(1)

    def loss_terms(self, batch) -> int:
        """The terms `loss` averages over: the prompts whose last point is scored, not every scored point
        (a batch's `n_scored`); multi-process training weighs each process's loss by it."""
        return int(batch.scored[:, -1].sum()) if batch.scored is not None else int(batch.xs.shape[0])
