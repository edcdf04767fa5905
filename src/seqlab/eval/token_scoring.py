"""Scoring a model of token ids at a task's scored positions (MQAR, Triplet-Counting, key-value retrieval)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlab.core.targets import IGNORE


@torch.no_grad()
def score_tokens(model, tokens: np.ndarray, targets: np.ndarray, batch: int = 256, keep_right: bool = False) -> dict[str, Any]:
    """Greedy predictions at every scored position: the share right ("accuracy", Zoology's MQAR
    metric), the share of sequences with every scored position right ("exact_match"), and per
    position of the sequence, the share right ("by_position", for placement studies). With
    `keep_right`, also "right": the (N, L) bool array of which scored positions were right, for
    scoring parts of an answer separately."""
    model.eval()
    dev = next(model.parameters()).device
    right = np.zeros(targets.shape, dtype=bool)
    for s in range(0, len(tokens), batch):
        t = torch.from_numpy(tokens[s:s + batch]).to(dev)
        y = torch.from_numpy(targets[s:s + batch]).to(dev)
        logits, wanted = model.scored_logits(t, y)
        keep = (y != IGNORE).cpu().numpy()
        block = np.zeros(keep.shape, dtype=bool)
        block[keep] = (logits.argmax(-1) == wanted).cpu().numpy()  # both in row-major order of `keep`
        right[s:s + batch] = block
    scored = targets != IGNORE
    n_scored = int(scored.sum())
    per_seq = np.all(right | ~scored, axis=1)
    cols = np.flatnonzero(scored.any(axis=0))
    return {"accuracy": float(right.sum() / max(n_scored, 1)), "exact_match": float(per_seq.mean()) if len(per_seq) else 0.0,
            "n": int(len(tokens)), "n_scored": n_scored,
            "by_position": {str(int(c)): float(right[:, c][scored[:, c]].mean()) for c in cols},
            **({"right": right} if keep_right else {})}
