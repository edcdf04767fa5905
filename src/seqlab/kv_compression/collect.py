"""A trained decoder's keys and values, per attention layer, as the cache would receive them (after RoPE)."""

from __future__ import annotations

import numpy as np
import torch

from seqlab.models.kvcache.base import FullCache


@torch.no_grad()
def collect_kv(model, tokens: np.ndarray, pad_id: int | None = None, batch: int = 128,
               max_vectors: int | None = None, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(K (M, hd), V (M, hd))] per attention layer: every head's vector at every non-pad token of the
    sequences (a prefill through full caches records them). `max_vectors` keeps a random subset per layer."""
    model.eval()
    per_layer: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for s in range(0, len(tokens), batch):
        t = torch.from_numpy(np.asarray(tokens[s:s + batch]))
        caches = model.new_caches(len(t), t.shape[1], "cpu", kv_cache=lambda i, B, H, hd: FullCache(B, H, hd))
        model(t, None, caches, start=0)
        keep = (t != pad_id) if pad_id is not None else torch.ones_like(t, dtype=torch.bool)  # (B, L)
        layers = [c for c in caches if isinstance(c, FullCache)]
        while len(per_layer) < len(layers):
            per_layer.append([])
        for i, c in enumerate(layers):
            k, v = c.dense()  # (B, H, L, hd)
            mask = keep[:, None, :].expand(k.shape[:3])
            per_layer[i].append((k[mask].float(), v[mask].float()))
    out = []
    g = torch.Generator().manual_seed(seed)
    for parts in per_layer:
        k, v = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if max_vectors is not None and len(k) > max_vectors:
            pick = torch.randperm(len(k), generator=g)[:max_vectors]
            k, v = k[pick], v[pick]
        out.append((k, v))
    return out
