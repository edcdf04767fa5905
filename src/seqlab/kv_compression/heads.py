"""A trained decoder's attention heads, for CHAI (seqlab.models.kvcache.chai): each head's score pattern on
sample inputs, CHAI's offline step per layer (the elbow curve, a static membership, how redundant the
heads are), and a cache factory with one cluster count per layer that counts what its caches keep.

    features = head_scores(model, tokens, window=48)          # [(S, H, f)] per attention layer
    layer = analyse_layer(features[0], probe_k=4)             # elbow, redundancy, static memberships
    factory = ClusteredFactory(model, [4, 8], "per-request")  # k = 4 in layer 0, every head in layer 1
    scores = score_through(model, tokens, targets, factory)   # accuracy, K bytes, QK^T multiply-adds
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from seqlab.core.errors import BadInput
from seqlab.core.targets import IGNORE
from seqlab.kv_compression.methods import attention_layers
from seqlab.kv_compression.scoring import score_with_cache
from seqlab.models.kvcache.base import Cache, FullCache, exact_causal
from seqlab.models.kvcache.chai import ChaiCache, qk_multiply_adds
from seqlab.models.kvcache.head_clusters import (
    elbow,
    head_score_features,
    random_membership,
    redundancy,
    static_membership,
)


class ScoreCapture(Cache):
    """Ordinary causal attention over a whole sequence that keeps each head's causal probabilities among
    the first `window` tokens (head_score_features), the pattern CHAI clusters heads by."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, window: int):
        super().__init__(batch, n_heads, head_dim)
        self.window = window
        self.features: torch.Tensor | None = None

    def attend(self, q, k, v):
        self.features = head_score_features(q, k, self.window)
        self.length += q.shape[2]
        return exact_causal(q, k, v)


def informative_entries(window: int) -> torch.Tensor:
    """(window * window,) bool: the entries of a flattened causal pattern that can differ between heads.
    Above the diagonal every head has 0 and the first query's one probability is 1 for every head; kept,
    they would make any two heads look alike (they share the zeros) to a correlation."""
    i = torch.arange(window)[:, None]
    j = torch.arange(window)[None, :]
    return ((j <= i) & (i >= 1)).flatten()


@torch.no_grad()
def head_scores(model, tokens: np.ndarray, window: int, batch: int = 64) -> list[torch.Tensor]:
    """[(S, H, f)] per attention layer: each head's probabilities among the first `window` tokens of each of
    the S sequences, only at the informative entries (f of them)."""
    model.eval()
    keep = informative_entries(window)
    per_layer: list[list[torch.Tensor]] = []
    for s in range(0, len(tokens), batch):
        t = torch.from_numpy(np.asarray(tokens[s:s + batch]))
        caches = model.new_caches(len(t), t.shape[1], "cpu", kv_cache=lambda i, B, H, hd: ScoreCapture(B, H, hd, window))
        model(t, None, caches, start=0)
        layers = [c for c in caches if isinstance(c, ScoreCapture)]
        while len(per_layer) < len(layers):
            per_layer.append([])
        for j, c in enumerate(layers):
            per_layer[j].append(c.features[..., keep])
    return [torch.cat(parts) for parts in per_layer]


@dataclass
class LayerAnalysis:
    """CHAI's offline step on one layer's heads."""

    elbow: list[float]  # k-means inertia for k = 1 .. H, summed over the samples
    probe_k: int  # the cluster count the redundancy is measured at
    redundancy: float  # mean within-cluster correlation of the score patterns, static k-means membership
    redundancy_random: float  # the same measure for random memberships of probe_k clusters: the chance level
    memberships: dict[int, list[int]] = field(default_factory=dict)  # a static membership (H,) per k


def analyse_layer(features: torch.Tensor, probe_k: int, ks=(), seed: int = 0, n_random: int = 16) -> LayerAnalysis:
    """The elbow curve, the redundancy at probe_k and static memberships at probe_k and each of ks, from one
    layer's features (S, H, f)."""
    S, H, f = features.shape
    if not 1 <= probe_k < H:
        raise BadInput(f"redundancy needs 1 <= k < {H} (some cluster must hold two heads); got {probe_k}")
    curve = elbow(features, range(1, H + 1), seed).tolist()
    patterns = features.transpose(0, 1).reshape(H, S * f)  # each head's patterns, sample after sample
    memberships = {k: static_membership(features, k, seed) for k in sorted({probe_k, *ks})}
    gen = torch.Generator().manual_seed(seed)
    chance = [redundancy(patterns, random_membership(H, probe_k, gen)) for _ in range(n_random)]
    return LayerAnalysis(curve, probe_k, redundancy(patterns, memberships[probe_k]), float(np.nanmean(chance)),
                         {k: m.tolist() for k, m in memberships.items()})


def redundant_layers(redundancies: list[float], threshold: float) -> list[bool]:
    """Which layers are redundant: their redundancy reaches the threshold (NaN, no pair to measure: not)."""
    return [not math.isnan(r) and r >= threshold for r in redundancies]


def halved_clusters(redundant: list[bool], n_heads: int) -> list[int]:
    """Cluster counts per layer: half the heads where the layer is redundant, every head elsewhere."""
    return [max(1, n_heads // 2) if r else n_heads for r in redundant]


def k_bytes(cache: Cache) -> int:
    """The bytes of keys a layer's cache keeps (all its rows)."""
    if isinstance(cache, ChaiCache):
        return cache.k_cache_nbytes()
    k = cache.stored()["k"]
    return k.numel() * k.element_size()


def qk_counts(cache: Cache) -> tuple[int, int]:
    """QK^T multiply-adds of the cache's next decode step, per request: (every head's, those computed)."""
    if isinstance(cache, ChaiCache):
        return cache.qk_multiply_adds()
    n = qk_multiply_adds(cache.n_heads, cache.n_heads, cache.length + 1, cache.head_dim)[0]
    return n, n


class ClusteredFactory:
    """The decoder's kv_cache(layer, batch, n_heads, head_dim) with one CHAI cluster count per attention
    layer: a ChaiCache of `mode` where k < H, the full cache where a layer keeps every head (k = H changes
    nothing in any mode). `clusters=None` is the full cache everywhere; `memberships[j]` is layer j's static
    membership (static mode). It tallies, batch by batch, the keys its caches kept and the QK^T work of
    their next decode step, so only one batch's caches are held at a time."""

    def __init__(self, model, clusters: list[int] | None = None, mode: str = "per-request",
                 memberships: list | None = None, n_first: int = 5, seed: int = 0):
        self.index = attention_layers(model)
        if clusters is not None and len(clusters) != len(self.index):
            raise BadInput(f"one cluster count per attention layer: {len(self.index)} layers, {len(clusters)} counts")
        self.clusters, self.mode, self.memberships = clusters, mode, memberships
        self.n_first, self.seed = n_first, seed
        self.current: list[Cache] = []
        self.k_bytes, self.rows, self.batches = 0, 0, 0
        self.qk = (0, 0)  # per request, summed over layers, of the last batch (equal lengths: every batch's)

    def __call__(self, layer: int, B: int, H: int, hd: int) -> Cache:
        j = self.index[layer]
        if j == 0:  # a new batch begins with the first attention layer
            self.finish()
        k = H if self.clusters is None else self.clusters[j]
        if k == H:
            cache = FullCache(B, H, hd)
        elif self.mode == "static":
            cache = ChaiCache(B, H, hd, membership=self.memberships[j], n_first=self.n_first, mode="static")
        else:  # per-request, random, drop: the membership is made per request
            seed = self.seed * 1_000_003 + self.batches * 1_009 + j  # another draw per layer and batch
            cache = ChaiCache(B, H, hd, n_clusters=k, n_first=self.n_first, mode=self.mode, seed=seed)
        self.current.append(cache)
        return cache

    def finish(self) -> None:
        """Tally the caches of the batch just scored."""
        if not self.current:
            return
        self.k_bytes += sum(k_bytes(c) for c in self.current)
        self.rows += self.current[0].batch
        counts = [qk_counts(c) for c in self.current]
        self.qk = (sum(c[0] for c in counts), sum(c[1] for c in counts))
        self.batches += 1
        self.current = []


def score_through(model, tokens: np.ndarray, targets: np.ndarray, factory: ClusteredFactory,
                  batch: int = 256) -> dict[str, float]:
    """Teacher-forced accuracy through the factory's caches (score_with_cache), with the keys kept per
    sequence and the QK^T multiply-adds of a decode step after the last token (every head's, computed)."""
    first = int(np.flatnonzero((targets != IGNORE).any(0))[0])
    if first < factory.n_first:
        raise BadInput(f"CHAI clusters on the first {factory.n_first} tokens; the prefill (up to the first scored "
                       f"position, {first}) is shorter")
    scores = score_with_cache(model, tokens, targets, factory, batch=batch)
    factory.finish()
    return {"accuracy": scores["accuracy"], "exact_match": scores["exact_match"],
            "k_bytes": factory.k_bytes / max(factory.rows, 1), "qk_full": factory.qk[0], "qk_kept": factory.qk[1]}
