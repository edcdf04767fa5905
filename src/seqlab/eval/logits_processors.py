"""Logits processors: each takes a step's logits (B, V) and the tokens so far (B, T) and returns logits (B, V)
with the tokens it rules out set to -inf. A sampler (seqlab.eval.sampling) applies them in order, then
draws from the softmax of what is left.

Every filter keeps at least one token of each row (the likeliest; for typical, the most typical), so a row
never ends with nothing to draw. Ties at a threshold are kept (top-k may keep more than k on equal logits).
The definitions, with the papers they come from:

- temperature: logits / t.
- top-k: the k likeliest tokens (Fan et al. 2018).
- top-p (nucleus): the smallest set of the likeliest tokens whose probability reaches p (Holtzman et al. 2020).
- min-p: tokens whose probability is at least p times the top token's (Nguyen et al. 2024).
- typical: tokens ordered by how far their surprise -log p is from the entropy H of the row, the smallest such
  set whose probability reaches `mass` (locally typical sampling, Meister et al. 2023).
- epsilon: tokens whose probability is at least epsilon (Hewitt et al. 2022).
- eta: tokens whose probability is at least eta = min(epsilon, sqrt(epsilon) * exp(-H)) (Hewitt et al. 2022).
- repetition penalty: the logit z of a token already in the context becomes z / theta where z > 0 and
  z * theta otherwise (Keskar et al. 2019, CTRL).
- banned tokens: ids that are never written (a start token).
- frequency and presence penalties: z - alpha_f * count - alpha_p * [count > 0] for each token's count in the
  context (the OpenAI API's definition).

Entropies are in nats, as torch's softmax gives them; the filters only compare within a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def _keep(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """logits where `keep`, -inf elsewhere; the row's top token always stays."""
    keep = keep.clone()
    keep.scatter_(-1, logits.argmax(-1, keepdim=True), True)
    return logits.masked_fill(~keep, NEG_INF)


def _drop_outside(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """logits where `keep`, -inf elsewhere (`keep` already holds a token in every row)."""
    return logits.masked_fill(~keep, NEG_INF)


def _smallest_set_reaching(order_key: torch.Tensor, probs: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep mask (B, V) of the tokens taken in increasing `order_key` while the probability of those taken before
    them is below `mass`: the smallest prefix of that order whose probability reaches `mass`."""
    sorted_key, order = order_key.sort(dim=-1, stable=True)
    sorted_probs = probs.gather(-1, order)
    before = sorted_probs.cumsum(-1) - sorted_probs
    keep_sorted = before < mass
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (B, 1) in nats of rows of log-probabilities (-inf entries count as 0)."""
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1, keepdim=True)


@dataclass(frozen=True)
class Temperature:
    t: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return logits / self.t


@dataclass(frozen=True)
class TopK:
    k: int

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.k >= logits.shape[-1]:
            return logits
        kth = logits.topk(self.k, dim=-1).values[:, -1:]
        return _keep(logits, logits >= kth)


@dataclass(frozen=True)
class TopP:
    p: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(-1)
        return _keep(logits, _smallest_set_reaching(-probs, probs, self.p))


@dataclass(frozen=True)
class MinP:
    p: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(-1)
        return _keep(logits, probs >= self.p * probs.amax(-1, keepdim=True))


@dataclass(frozen=True)
class Typical:
    mass: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(-1)
        distance = (-logp - _entropy(logp)).abs()  # -inf logits are infinitely far: last in the order
        # The first token in this order always stays (as in transformers' TypicalLogitsWarper): the most typical
        # token, which need not be the likeliest.
        return _drop_outside(logits, _smallest_set_reaching(distance, logp.exp(), self.mass))


@dataclass(frozen=True)
class Epsilon:
    epsilon: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return _keep(logits, logits.softmax(-1) >= self.epsilon)


@dataclass(frozen=True)
class Eta:
    epsilon: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(-1)
        eta = torch.clamp(math.sqrt(self.epsilon) * torch.exp(-_entropy(logp)), max=self.epsilon)
        return _keep(logits, logp.exp() >= eta)


def context_counts(context: torch.Tensor, vocab: int) -> torch.Tensor:
    """How often each token id occurs in each row of the context: (B, V) float."""
    counts = torch.zeros(context.shape[0], vocab, device=context.device)
    return counts.scatter_add_(-1, context, torch.ones_like(context, dtype=counts.dtype))


@dataclass(frozen=True)
class RepetitionPenalty:
    theta: float

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        seen = context_counts(context, logits.shape[-1]) > 0
        penalised = torch.where(logits > 0, logits / self.theta, logits * self.theta)
        return torch.where(seen, penalised, logits)


@dataclass(frozen=True)
class FrequencyPresencePenalty:
    frequency: float = 0.0
    presence: float = 0.0

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        counts = context_counts(context, logits.shape[-1])
        return logits - self.frequency * counts - self.presence * (counts > 0).to(logits.dtype)


@dataclass(frozen=True)
class Banned:
    """Tokens that may never be written (a task's start token, which no target ever is)."""

    ids: tuple[int, ...]

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = logits.clone()
        out[:, list(self.ids)] = NEG_INF
        return out
