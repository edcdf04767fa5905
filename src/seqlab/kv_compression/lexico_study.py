"""The pieces of the Lexico study: dictionaries per layer, the grid of caches, and bytes-matched baselines.

Dictionaries are learned per attention layer, one for keys and one for values, from vectors of a set of
sequences (`collect_kv`): the universal ones from the stand-in tasks only, the task-specific ones from the
target task's own train split. Every cache is then scored on the target's test split through
`score_with_cache`, and every row of the grid carries its accuracy, its bytes per sequence as a share of
the 16-bit full cache, and its decode tokens/s.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from seqlab.kv_compression.collect import collect_kv
from seqlab.kv_compression.methods import CacheSpec, make_factory
from seqlab.kv_compression.scoring import score_with_cache
from seqlab.models.kvcache.dictionary import coding_error, pca_basis, random_dictionary, train_dictionary

Pairs = list[tuple[torch.Tensor, torch.Tensor]]  # (keys, values) per attention layer


def learn_dictionaries(vectors: Pairs, n_atoms: int, sparsity: int, steps: int, batch: int, lr: float,
                       seed: int, progress: Callable[[str], None] | None = None) -> Pairs:
    out = []
    for j, (k, v) in enumerate(vectors):
        pair = []
        for name, x in (("keys", k), ("values", v)):
            if progress:
                progress(f"layer {j} {name}: {n_atoms} atoms")
            pair.append(train_dictionary(x, n_atoms, sparsity, steps, batch, lr, seed=seed + 2 * j + (name == "values")))
        out.append((pair[0], pair[1]))
    return out


def random_dictionaries(n_layers: int, n_atoms: int, dim: int, seed: int) -> Pairs:
    return [(random_dictionary(n_atoms, dim, seed + 2 * j), random_dictionary(n_atoms, dim, seed + 2 * j + 1))
            for j in range(n_layers)]


def pca_bases(vectors: Pairs, rank: int) -> list:
    return [(pca_basis(k, rank), pca_basis(v, rank)) for k, v in vectors]


def reconstruction_errors(dictionaries: Pairs, vectors: Pairs, sparsity: int) -> dict[str, list[float]]:
    """Relative error per layer of keys and of values coded with `sparsity` atoms."""
    return {"keys": [coding_error(k, d[0], sparsity) for d, (k, _) in zip(dictionaries, vectors)],
            "values": [coding_error(v, d[1], sparsity) for d, (_, v) in zip(dictionaries, vectors)]}


def held_out_vectors(model, batches: list[np.ndarray], pad_id: int, max_vectors: int, seed: int) -> Pairs:
    """Keys and values of several token batches (one per task), pooled per layer and subsampled."""
    per_task = [collect_kv(model, b, pad_id, max_vectors=max_vectors, seed=seed) for b in batches]
    pooled = [(torch.cat([t[j][0] for t in per_task]), torch.cat([t[j][1] for t in per_task])) for j in range(len(per_task[0]))]
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, v in pooled:
        pick = torch.randperm(len(k), generator=g)[:max_vectors]
        out.append((k[pick], v[pick]))
    return out


def score_grid(model, tokens: np.ndarray, targets: np.ndarray, specs: list[CacheSpec], resources: dict[str, Any],
               decode: int | None, full_bytes: float) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        factory = make_factory(model, spec, resources.get("dictionaries"), resources.get("bases"))
        r = score_with_cache(model, tokens, targets, factory, decode=decode)
        rows.append({"cache": spec.name(), "method": spec.method, "dictionary": spec.dictionary if spec.method == "lexico" else None,
                     "accuracy": r["accuracy"], "exact_match": r["exact_match"], "kv_bytes": r["kv_bytes"],
                     "kv_share": r["kv_bytes"] / full_bytes, "shared_bytes": r["shared_bytes"],
                     "decode_tokens_per_s": r["decode_tokens_per_s"], "spec": spec.model_dump(exclude_defaults=True)})
    return rows


def best_within(rows: list[dict[str, Any]], share: float, method: str, dictionary: str | None = None) -> dict | None:
    """The most accurate row of a method at or under a share of the full cache's bytes."""
    fits = [r for r in rows if r["method"] == method and r["kv_share"] <= share
            and (dictionary is None or r["dictionary"] == dictionary)]
    return max(fits, key=lambda r: (r["accuracy"], -r["kv_share"]), default=None)
