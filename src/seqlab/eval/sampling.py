"""Choosing the next token from logits: greedy, or sampled with temperature, top-k and nucleus (top-p).

`next_token_picker(...)` returns a function (B, V) logits -> (B,) token ids that a model's `generate`
calls at every step; None means greedy (argmax), which is what evaluation uses.
"""

from __future__ import annotations

from typing import Callable

import torch

from seqlab.core.errors import BadInput

Picker = Callable[[torch.Tensor], torch.Tensor]


def next_token_picker(temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                      seed: int | None = None) -> Picker | None:
    """None (greedy) at temperature 0; otherwise sampling from softmax(logits / temperature), restricted to
    the `top_k` likeliest tokens and to the smallest set whose probability reaches `top_p`. `seed` makes
    the draws repeatable (a generator of their own, so the global RNG is left alone)."""
    if temperature < 0:
        raise BadInput(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise BadInput(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise BadInput(f"top_p must lie in (0, 1], got {top_p}")
    if temperature == 0:
        return None
    generators: dict[torch.device, torch.Generator] = {}

    def pick(logits: torch.Tensor) -> torch.Tensor:
        dev = logits.device
        if dev not in generators:
            generators[dev] = torch.Generator(device=dev)
            if seed is not None:
                generators[dev].manual_seed(seed)
            else:
                generators[dev].seed()
        scaled = logits.float() / temperature  # (B, V)
        if top_k is not None and top_k < scaled.shape[-1]:
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        if top_p is not None and top_p < 1:
            probs, order = scaled.softmax(-1).sort(dim=-1, descending=True)
            # Keep a token while the probability of the likelier ones is below top_p: the first always stays.
            drop = probs.cumsum(-1) - probs >= top_p
            scaled = scaled.scatter(-1, order, torch.where(drop, float("-inf"), scaled.gather(-1, order)))
        return torch.multinomial(scaled.softmax(-1), 1, generator=generators[dev])[:, 0]

    return pick


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The reference picker: the likeliest token of each row."""
    return logits.argmax(-1)
