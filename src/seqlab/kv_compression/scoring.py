"""Scoring a token-task model through a KV cache: the context is prefilled, then every later token is
fed one at a time, as in decoding, and the prediction at each scored position is read on the way.

Teacher forcing keeps the comparison about the cache: each cache sees the same tokens, so a wrong answer
is the cache's, not an earlier mistake's. The prefill stops before the first scored position (by default),
so a query that comes after the context reaches the cache only at decoding: a method that chooses tokens
at prefill (SnapKV) cannot know which ones the query will need.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from seqlab.core.targets import IGNORE
from seqlab.models.kvcache.base import Cache


@torch.no_grad()
def score_with_cache(model, tokens: np.ndarray, targets: np.ndarray, kv_cache: Callable | None,
                     prefill: int | None = None, decode: int | None = None, batch: int = 256) -> dict[str, Any]:
    """Accuracy at the scored positions, exact match per sequence, and the cache's bytes per sequence
    at the end (`kv_bytes`, what each request keeps; `shared_bytes`, counted once), with decode tokens/s.
    `kv_cache=None` is the model's own cache (the float32 reference, no byte count). `decode` stops after
    that many tokens past the prefill: only the scored positions before there count (a short question
    after a long context)."""
    model.eval()
    first = int(np.flatnonzero((targets != IGNORE).any(0))[0])
    P = first if prefill is None else prefill
    if not 1 <= P <= first + 1:
        raise ValueError(f"the prefill must hold 1..{first + 1} tokens (the first scored position is {first}), got {P}")
    if decode is not None:
        tokens, targets = tokens[:, :P + decode], targets[:, :P + decode]
    scored = targets != IGNORE
    right = np.zeros(targets.shape, dtype=bool)
    kv_bytes, shared, decode_s, decoded = 0, 0, 0.0, 0
    for s in range(0, len(tokens), batch):
        t = torch.from_numpy(np.asarray(tokens[s:s + batch]))
        B, L = t.shape
        caches = model.new_caches(B, L, "cpu", kv_cache=kv_cache)
        logits = [model(t[:, :P], None, caches, start=0)[:, -1]]
        t0 = time.perf_counter()
        for j in range(P, L):
            logits.append(model(t[:, j:j + 1], None, caches, start=j)[:, -1])
        decode_s += time.perf_counter() - t0
        decoded += B * (L - P)
        pred = torch.stack(logits, 1).argmax(-1).numpy()  # predictions for positions P-1 .. L-1
        y = targets[s:s + batch, P - 1:P - 1 + pred.shape[1]]
        right[s:s + batch, P - 1:P - 1 + pred.shape[1]] = pred == y
        layer_caches = [c for c in caches if isinstance(c, Cache)]
        kv_bytes += sum(c.nbytes() for c in layer_caches)
        shared = sum(c.shared_nbytes() for c in layer_caches)
    right &= scored
    n_scored = int(scored.sum())
    return {"accuracy": float(right.sum() / max(n_scored, 1)),
            "exact_match": float(np.all(right | ~scored, axis=1).mean()),
            "n": int(len(tokens)), "n_scored": n_scored, "prefill": P,
            "kv_bytes": kv_bytes / len(tokens), "shared_bytes": shared,
            "decode_tokens_per_s": decoded / decode_s if decode_s > 0 else None}
