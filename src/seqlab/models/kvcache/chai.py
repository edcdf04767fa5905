"""CHAI: clustered head attention (Agarwal et al., ICML 2024, "CHAI: Clustered Head Attention for
Efficient LLM Inference", arXiv 2403.08058).

Heads that attend to the same tokens are redundant: CHAI groups a layer's H heads into k clusters,
computes attention probabilities only for one head per cluster, and lets every member apply those
probabilities to its own values. Only the representatives' keys are needed, so the key cache shrinks
by k/H and so do the QK^T multiply-adds of every decode step.

What is followed, from the paper's text and its reference code (github.com/facebookresearch/chai,
llama.patch: Attention.forward; perform_offline_clustering.py):

- Online membership, per request: each head's softmax(q k^T / sqrt(hd)) among the first five tokens,
  flattened, is its feature; heads are clustered by scikit-learn AgglomerativeClustering(linkage=
  "average", metric="precomputed") on scipy's cosine distances of those features (here: the same
  linkage in torch, head_clusters.agglomerative). A cluster's representative is its lowest-index head
  (`grouped_heads[0]`). The reference asserts prompts of at least 6 tokens; here at least n_first.
- Offline, per layer: k from the elbow of k-means inertia summed over sample inputs (sklearn KMeans,
  k = 1..H); head_clusters.elbow gives the curve, static_membership one fixed clustering.
- The representative's probabilities replace the member's, and every head keeps its own values.

Where this differs from the reference code, and why:
- The features here are causal (the reference softmaxes the 5x5 block unmasked), since those are the
  probabilities the model computes for those tokens.
- The first n_first prompt positions use every head's own attention, as the paper describes (the
  membership is decided once they have been seen); the reference applies the clusters to the whole
  prompt.
- Only the representatives' keys are stored (B, k, T, hd); the reference keeps every head's keys and
  gathers the representatives' each step, so it saves compute but not key memory.
- The reference reshapes (B, L, H, hd) to (B, H, L, hd) with a view rather than a transpose, which
  mixes heads and positions; here each head's own queries and keys are used.

Modes, for the experiments around it: "per-request" (CHAI), "static" (one membership given for every
request, e.g. static_membership over sample inputs), "random" (k non-empty clusters from the seed, per
request) and "drop" (only the representatives attend; the other heads output zero from position
n_first on, a head-pruning control that stores the representatives' values only).
"""

from __future__ import annotations

import torch

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.base import EXACT_DTYPE, Cache, exact_causal
from seqlab.models.kvcache.head_clusters import (
    agglomerative,
    canonical,
    cosine_distance,
    head_score_features,
    random_membership,
    representatives,
)

MODES = ("per-request", "static", "random", "drop")


def qk_multiply_adds(n_heads: int, n_clusters: int, n_keys: int, head_dim: int) -> tuple[int, int]:
    """QK^T multiply-adds of one query token over n_keys keys: every head's, and the representatives'."""
    return n_heads * n_keys * head_dim, n_clusters * n_keys * head_dim


def _pick(x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """x (B, H, ...) at per-row head indices heads (B, m): (B, m, ...)."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], heads.to(x.device)]


class ChaiCache(Cache):
    """One layer's CHAI cache: keys of each cluster's representative, values of every head.

    membership: None (per-request, random), or labels (H,) for every row, or (B, H) per row, with
    labels in 0..k-1 and each used (static, drop; drop clusters per request when it is None).
    n_clusters: k, inferred from a given membership when left out. n_first: the prompt tokens that
    decide the membership and are attended by every head itself. seed: the random mode's draw.
    """

    def __init__(self, batch: int, n_heads: int, head_dim: int, membership=None, n_clusters: int | None = None,
                 n_first: int = 5, mode: str = "per-request", seed: int = 0):
        super().__init__(batch, n_heads, head_dim)
        if mode not in MODES:
            raise BadInput(f"unknown CHAI mode {mode!r}; one of {', '.join(MODES)}")
        if n_first < 1:
            raise BadInput(f"n_first must be at least 1 (the tokens that decide the clusters); got {n_first}")
        if membership is not None and mode in ("per-request", "random"):
            raise BadInput(f"mode {mode!r} makes its own membership; pass membership with mode 'static' or 'drop'")
        if membership is None and mode == "static":
            raise BadInput("mode 'static' needs a membership: labels (n_heads,) or (batch, n_heads)")
        if membership is not None:
            membership = self._check_membership(torch.as_tensor(membership), n_clusters)
            n_clusters = int(membership.max()) + 1
        if n_clusters is None:
            raise BadInput(f"mode {mode!r} needs n_clusters (k) when no membership is given")
        if not 1 <= n_clusters <= n_heads:
            raise BadInput(f"n_clusters must be in 1..{n_heads} (the layer's heads); got {n_clusters}")
        self.mode, self.n_clusters, self.n_first = mode, n_clusters, n_first
        if mode == "random":
            gen = torch.Generator().manual_seed(seed)
            membership = torch.stack([random_membership(n_heads, n_clusters, gen) for _ in range(batch)])
        self.membership: torch.Tensor | None = None  # (B, H) canonical labels, once known
        self.reps: torch.Tensor | None = None  # (B, k) each cluster's lowest-index head
        if membership is not None:
            self._set_membership(membership)
        self.k = self.v = None  # (B, k, T, hd) and (B, H, T, hd) (drop: (B, k, T, hd)), from the prompt on

    def _check_membership(self, labels: torch.Tensor, n_clusters: int | None) -> torch.Tensor:
        B, H = self.batch, self.n_heads
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise BadInput(f"membership must hold integer cluster labels; got {labels.dtype}")
        if tuple(labels.shape) not in ((H,), (B, H)):
            raise BadInput(f"membership must be ({H},) or ({B}, {H}) (heads, or batch by heads); "
                           f"got {tuple(labels.shape)}")
        labels = labels.long().expand(B, H)
        k = n_clusters if n_clusters is not None else int(labels.max()) + 1
        if int(labels.min()) < 0 or int(labels.max()) >= k:
            raise BadInput(f"membership labels must lie in 0..{k - 1} for {k} clusters")
        for row in labels:
            if len(row.unique()) != k:
                raise BadInput(f"every one of the {k} clusters needs a head in each row; one is empty")
        return labels

    def _set_membership(self, labels: torch.Tensor) -> None:
        self.membership = canonical(labels.long())
        self.reps = representatives(self.membership, self.n_clusters)

    def _cluster_prompt(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """CHAI's online step: cluster each row's heads by their attention among the first tokens."""
        dist = cosine_distance(head_score_features(q, k, self.n_first)).cpu()  # (B, H, H)
        self._set_membership(torch.stack([agglomerative(d, self.n_clusters) for d in dist]))

    # -- attention -----------------------------------------------------------------------------------
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.length == 0:
            y = self._prefill(q, k, v)
        else:
            keys = torch.cat([self.k.to(q.dtype), _pick(k, self.reps)], 2)
            values = torch.cat([self.v.to(v.dtype), self._kept_values(v)], 2)
            y = self._shared(q, keys, values, first=self.length)
            self._store(k, v)
        self.length += q.shape[2]
        return y

    def _prefill(self, q, k, v):
        L, n = q.shape[2], self.n_first
        if L < n:
            raise BadInput(f"CHAI decides its clusters on the first {n} prompt tokens; the prompt has {L}")
        if self.membership is None:
            self._cluster_prompt(q, k)
        own = exact_causal(q[:, :, :n], k[:, :, :n], v[:, :, :n])  # every head itself, before the clusters
        rest = self._shared(q[:, :, n:], _pick(k, self.reps), self._kept_values(v), first=n)
        self.k = self.v = None
        self._store(k, v)
        return torch.cat([own, rest], 2)

    def _shared(self, q, keys, values, first: int) -> torch.Tensor:
        """Outputs (B, H, Lq, hd) of queries at positions first.. over keys of the representatives (B, k,
        T, hd) at positions 0..T-1: each head weights its own values by its representative's probabilities."""
        B, H, Lq, hd = q.shape
        T = keys.shape[2]
        logits = (_pick(q, self.reps) @ keys.transpose(-1, -2)) * self.scale  # (B, k, Lq, T)
        future = torch.arange(T, device=q.device)[None, :] > torch.arange(first, first + Lq, device=q.device)[:, None]
        p = torch.softmax(logits.float().masked_fill(future, float("-inf")), -1).to(q.dtype)
        if self.mode == "drop":  # only the representatives attend; the rest are pruned
            y = torch.zeros(B, H, Lq, hd, dtype=values.dtype, device=values.device)
            y[torch.arange(B, device=q.device)[:, None], self.reps.to(q.device)] = p @ values
            return y
        return _pick(p, self.membership) @ values

    def _kept_values(self, v: torch.Tensor) -> torch.Tensor:
        return _pick(v, self.reps) if self.mode == "drop" else v

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        new_k = _pick(k, self.reps).to(EXACT_DTYPE)
        new_v = self._kept_values(v).to(EXACT_DTYPE)
        self.k = new_k if self.k is None else torch.cat([self.k, new_k], 2)
        self.v = new_v if self.v is None else torch.cat([self.v, new_v], 2)
        self.membership, self.reps = self.membership.to(k.device), self.reps.to(k.device)

    # -- what is kept --------------------------------------------------------------------------------
    def stored(self) -> dict[str, torch.Tensor]:
        kept = {"k": self.k, "v": self.v, "membership": self.membership, "representatives": self.reps}
        return {name: t for name, t in kept.items() if t is not None}

    def k_cache_nbytes(self) -> int:
        return 0 if self.k is None else self.k.numel() * self.k.element_size()

    def qk_multiply_adds(self) -> tuple[int, int]:
        """QK^T multiply-adds of the next decode step, per request: (all heads, representatives only)."""
        return qk_multiply_adds(self.n_heads, self.n_clusters, self.length + 1, self.head_dim)

    def qk_flops_saved(self) -> int:
        full, clustered = self.qk_multiply_adds()
        return full - clustered
