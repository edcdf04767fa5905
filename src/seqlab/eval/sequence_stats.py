"""Statistics of generated sequences: n-gram diversity, and the surprise a model's distribution gives each
token it wrote (teacher-forced, so any decoding method is measured the same way)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

LN2 = math.log(2.0)


def ngrams(seq: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_ngrams(seqs: Sequence[Sequence[int]], n: int = 4) -> float:
    """Distinct n-grams over all n-grams of the sequences pooled (Li et al. 2016's distinct-n): 1 when no
    n-gram repeats anywhere, small when the sequences repeat themselves or each other."""
    pooled = [g for s in seqs for g in ngrams(list(s), n)]
    return len(set(pooled)) / len(pooled) if pooled else float("nan")


@torch.no_grad()
def surprise_bits(model, prompt: torch.Tensor, prompt_pos: torch.Tensor, pos_base: torch.Tensor, generated: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """-log2 p(token) under softmax(logits / temperature) for every generated token: (B, T) bits.
    prompt, prompt_pos (B, Lp); pos_base (B,); generated (B, T)."""
    B, Lp = prompt.shape
    T = generated.shape[1]
    tokens = torch.cat([prompt, generated[:, :-1]], 1)
    pos = torch.cat([prompt_pos, pos_base[:, None] + torch.arange(T - 1, device=prompt.device)], 1)
    logits = model(tokens, pos)[:, Lp - 1:].float() / temperature  # (B, T, V): the logits each token was drawn from
    logp = logits.log_softmax(-1).gather(-1, generated[..., None])[..., 0]
    return -logp / LN2
