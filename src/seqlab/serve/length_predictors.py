"""Predicted output lengths, which multi-bin batching sorts requests by.

  oracle   the length greedy decoding will write (known after the fact; the paper's best case)
  noisy    the oracle times exp(sigma * N(0, 1)): a predictor whose errors are relative, as a length regressor's are
  learned  ridge regression of log length on the decoder's own hidden state at the last prompt token and the prompt's
           length (a small head on the frozen model, fitted on requests served before): what a deployment could use

Each predictor's `predict(requests)` writes `Request.predicted`.
"""

from __future__ import annotations

import numpy as np
import torch

from seqlab.core.errors import BadInput
from seqlab.serve.slots import Request


class Oracle:
    name = "oracle"

    def predict(self, requests: list[Request]) -> None:
        for r in requests:
            if r.true_length is None:
                raise BadInput(f"request {r.id} has no true length for the oracle")
            r.predicted = float(r.true_length)


class Noisy:
    def __init__(self, sigma: float, seed: int = 0):
        if sigma < 0:
            raise BadInput(f"sigma must be >= 0, got {sigma}")
        self.sigma, self.seed = sigma, seed
        self.name = f"noisy sigma={sigma:g}"

    def predict(self, requests: list[Request]) -> None:
        rng = np.random.default_rng(self.seed)
        for r in requests:
            if r.true_length is None:
                raise BadInput(f"request {r.id} has no true length to add noise to")
            r.predicted = float(r.true_length * np.exp(self.sigma * rng.standard_normal()))


@torch.no_grad()
def last_prompt_states(model, requests: list[Request]) -> np.ndarray:
    """(N, D): the final hidden state at each prompt's last token, read one prompt at a time."""
    dev = model.tok_emb.weight.device
    rows = []
    for r in requests:
        h = model.hidden(torch.tensor([r.prompt], device=dev), torch.tensor([r.prompt_pos], device=dev))
        rows.append(h[0, -1].double().cpu().numpy())
    return np.stack(rows)


class Learned:
    name = "learned"

    def __init__(self, model, ridge: float = 1e-2):
        self.model, self.ridge = model, ridge
        self.coef: np.ndarray | None = None

    def fit(self, requests: list[Request]) -> dict:
        """Fit on requests whose true lengths are known; returns the fit's mean relative error on them."""
        if any(r.true_length is None for r in requests) or len(requests) < 2:
            raise BadInput("the learned predictor needs at least two requests with true lengths to fit")
        X = self._features(requests)
        y = np.log([r.true_length for r in requests])
        A = X.T @ X + self.ridge * len(X) * np.eye(X.shape[1])
        A[-1, -1] -= self.ridge * len(X)  # no penalty on the intercept
        self.coef = np.linalg.solve(A, X.T @ y)
        pred = np.exp(X @ self.coef)
        true = np.exp(y)
        return {"train_relative_error": float(np.mean(np.abs(pred / true - 1)))}

    def predict(self, requests: list[Request]) -> None:
        if self.coef is None:
            raise BadInput("the learned length predictor is not fitted")
        for r, p in zip(requests, np.exp(self._features(requests) @ self.coef)):
            r.predicted = float(p)

    def _features(self, requests: list[Request]) -> np.ndarray:
        X = last_prompt_states(self.model, requests)
        L = np.array([[len(r.prompt)] for r in requests], dtype=np.float64)
        return np.concatenate([X, np.log(L), L / 64.0, np.ones((len(X), 1))], 1)
