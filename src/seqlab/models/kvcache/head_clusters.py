"""Clustering attention heads by the tokens they attend to (the clustering half of CHAI, see chai.py).

Pure torch and deterministic given a seed, so a cache built twice clusters its heads the same way.

- `head_score_features`: each head's causal attention probabilities among the first n tokens, flattened.
- `cosine_distance`: 1 - cosine similarity of those features, as scipy's cdist(metric="cosine").
- `agglomerative`: average-linkage (UPGMA) clustering of a precomputed distance matrix, the linkage
  CHAI's reference code asks scikit-learn for; CHAI's online step (per request).
- `kmeans`, `elbow`, `static_membership`: CHAI's offline step, k-means inertia against k summed over
  sample inputs (an elbow plot picks each layer's k), and one fixed membership from sample inputs.
- `random_membership`: k non-empty clusters at random (a control).
- `redundancy`: how alike the heads of a clustering's shared clusters attend (defined there).

Labels are canonical: clusters are numbered in the order of their lowest-index head, so cluster c's
representative (its lowest-index head) is the c-th smallest representative.
"""

from __future__ import annotations

import math

import torch

from seqlab.core.errors import BadInput


def canonical(labels: torch.Tensor) -> torch.Tensor:
    """Relabel (..., n) so that clusters are numbered by their first member, 0, 1, 2, ..."""
    flat = labels.reshape(-1, labels.shape[-1])
    out = torch.empty_like(flat)
    for r, row in enumerate(flat.tolist()):
        seen: dict[int, int] = {}
        out[r] = torch.tensor([seen.setdefault(x, len(seen)) for x in row])
    return out.reshape(labels.shape)


def representatives(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(..., k): each cluster's lowest-index member, for canonical labels (..., n) of k clusters."""
    n = labels.shape[-1]
    index = torch.arange(n, device=labels.device).expand_as(labels)
    big = torch.full(labels.shape[:-1] + (k,), n, dtype=torch.long, device=labels.device)
    return big.scatter_reduce(-1, labels.long(), index, reduce="amin")


def head_score_features(q: torch.Tensor, k: torch.Tensor, n_first: int) -> torch.Tensor:
    """(B, H, n_first * n_first): each head's causal attention probabilities among the first n_first
    tokens (zeros above the diagonal), from queries and keys (B, H, L, hd) with L >= n_first."""
    if q.shape[2] < n_first:
        raise BadInput(f"head features need the first {n_first} tokens; the input has {q.shape[2]}")
    qf, kf = q[:, :, :n_first].float(), k[:, :, :n_first].float()
    logits = (qf @ kf.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    future = torch.ones(n_first, n_first, dtype=torch.bool, device=q.device).triu(1)
    p = torch.softmax(logits.masked_fill(future, float("-inf")), -1)
    return p.flatten(-2)


def cosine_distance(features: torch.Tensor) -> torch.Tensor:
    """(..., n, n) float64: 1 - cos(angle) between the rows of features (..., n, f)."""
    x = features.double()
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    dist = (1.0 - unit @ unit.transpose(-1, -2)).clamp(0.0, 2.0)
    return dist * (1 - torch.eye(dist.shape[-1], dtype=dist.dtype, device=dist.device))


def agglomerative(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Canonical labels (n,) of k clusters by average linkage on a symmetric distance matrix (n, n).

    Repeatedly merges the two clusters whose members are closest on average (ties: the lowest pair
    of cluster slots), updating distances by Lance-Williams: d(a+b, m) = (|a| d(a,m) + |b| d(b,m)) / (|a|+|b|).
    """
    n = dist.shape[0]
    if dist.dim() != 2 or dist.shape[1] != n:
        raise BadInput(f"agglomerative clustering needs a square distance matrix, got {tuple(dist.shape)}")
    if not 1 <= k <= n:
        raise BadInput(f"cannot make {k} clusters of {n} points; k must be in 1..{n}")
    d = dist.double().clone()
    d.fill_diagonal_(math.inf)
    size = [1] * n
    slot = list(range(n))  # the cluster slot each point is in
    for _ in range(n - k):
        a, b = divmod(int(d.argmin()), n)
        a, b = min(a, b), max(a, b)
        merged = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        d[a], d[:, a] = merged, merged
        d[b], d[:, b] = math.inf, math.inf
        d[a, a] = math.inf
        size[a] += size[b]
        slot = [a if s == b else s for s in slot]
    return canonical(torch.tensor(slot))


def _plus_plus(points: torch.Tensor, k: int, gen: torch.Generator, centres: torch.Tensor | None = None):
    """k-means++ seeding: extend `centres` (or start afresh) to k centres, each new one a point drawn
    with probability proportional to its squared distance from the nearest centre so far."""
    n = points.shape[0]
    chosen = [] if centres is None else list(centres)
    if not chosen:
        chosen.append(points[int(torch.randint(n, (1,), generator=gen))])
    while len(chosen) < k:
        d2 = torch.cdist(points, torch.stack(chosen)).pow(2).min(1).values
        if float(d2.sum()) > 0:
            i = int(torch.multinomial(d2 / d2.sum(), 1, generator=gen))
        else:  # every point already sits on a centre: any point will do
            i = int(torch.randint(n, (1,), generator=gen))
        chosen.append(points[i])
    return torch.stack(chosen)


def _lloyd(points: torch.Tensor, centres: torch.Tensor, iters: int):
    """Lloyd's iterations from `centres`; (labels, inertia, centres). Each step can only lower the
    inertia, which is what keeps a warm-started elbow curve non-increasing."""
    k = centres.shape[0]
    for _ in range(iters):
        d2 = torch.cdist(points, centres).pow(2)
        labels = d2.argmin(1)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):  # an empty cluster restarts on the points worst served by their centre
            worst = d2.gather(1, labels[:, None]).squeeze(1).argsort(descending=True)
            new[empty] = points[worst[: len(empty)]]
        if torch.equal(new, centres):
            break
        centres = new
    d2 = torch.cdist(points, centres).pow(2)
    labels = d2.argmin(1)
    return labels, float(d2.gather(1, labels[:, None]).sum()), centres


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iters: int = 100) -> tuple[torch.Tensor, float]:
    """k-means of points (n, f) from a k-means++ seeding; (canonical labels (n,), inertia: the sum of
    squared distances of the points to their centres)."""
    if points.dim() != 2 or not 1 <= k <= points.shape[0]:
        raise BadInput(f"k-means needs points (n, f) and 1 <= k <= n; got {tuple(points.shape)} and k={k}")
    x = points.double()
    gen = torch.Generator().manual_seed(seed)
    labels, inertia, _ = _lloyd(x, _plus_plus(x, k, gen), iters)
    return canonical(labels), inertia


def elbow(points: torch.Tensor, ks, seed: int = 0, iters: int = 100) -> torch.Tensor:
    """k-means inertia for each k in ks (float64, in the order of ks), of points (n, f) or summed over
    samples (S, n, f), as CHAI's offline step sums it over its sample inputs. Each k starts from the
    previous k's centres plus k-means++ additions, so the curve cannot rise with k."""
    x = points.double()
    x = x[None] if x.dim() == 2 else x
    order = sorted(set(int(k) for k in ks))
    if not order or order[0] < 1 or order[-1] > x.shape[1]:
        raise BadInput(f"elbow needs each k in 1..{x.shape[1]}; got {list(ks)}")
    total = dict.fromkeys(order, 0.0)
    gen = torch.Generator().manual_seed(seed)
    for sample in x:
        centres = None
        for k in order:
            _, inertia, centres = _lloyd(sample, _plus_plus(sample, k, gen, centres), iters)
            total[k] += inertia
    return torch.tensor([total[int(k)] for k in ks], dtype=torch.float64)


def static_membership(features: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """One membership (H,) for every request: k-means of the heads, each head's features (S, H, f)
    over S sample inputs laid end to end."""
    x = features[None] if features.dim() == 2 else features
    return kmeans(x.transpose(0, 1).reshape(x.shape[1], -1), k, seed)[0]


def random_membership(n_heads: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Canonical labels (n_heads,) of k clusters drawn at random, none of them empty."""
    order = torch.randperm(n_heads, generator=gen)
    labels = torch.randint(k, (n_heads,), generator=gen)
    labels[order[:k]] = torch.arange(k)  # k distinct heads found the k clusters
    return canonical(labels)


def redundancy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """How alike the heads of each shared cluster attend.

    scores (H, f): each head's attention probabilities (its score pattern), flattened; labels (H,).
    For each cluster of at least two heads, the mean over its unordered pairs of heads of the Pearson
    correlation of their score patterns; the result is the mean of those over the clusters. NaN when
    every cluster is a single head (there is no pair to measure), and NaN where a head's pattern is
    constant (its correlation is undefined).
    """
    per_cluster = []
    for c in labels.unique().tolist():
        members = scores[labels == c].double()
        m = members.shape[0]
        if m < 2:
            continue
        corr = torch.corrcoef(members)
        pairs = torch.triu_indices(m, m, 1)
        per_cluster.append(float(corr[pairs[0], pairs[1]].mean()))
    return sum(per_cluster) / len(per_cluster) if per_cluster else math.nan
