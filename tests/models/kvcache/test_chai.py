"""CHAI's cache: the head clustering, exactness where clusters lose nothing, a slow reference loop,
the controls, the byte count, a decoder end to end, and the settings it refuses."""

import math

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.kvcache.base import EXACT_DTYPE, FullCache
from seqlab.models.kvcache.chai import ChaiCache, qk_multiply_adds
from seqlab.models.kvcache.head_clusters import (
    agglomerative,
    cosine_distance,
    elbow,
    head_score_features,
    kmeans,
    redundancy,
    static_membership,
)

torch.set_num_threads(1)

B, H, HD, LP, STEPS = 2, 4, 8, 9, 4  # batch, heads, head dim, prompt length, decode steps


def _same_partition(a, b) -> bool:
    """Equal up to relabelling: a one-to-one map between the two label sets."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _fp16_exact(*shape):
    """Random numbers a 16-bit cache stores without rounding, so a reference needs no rounding either."""
    return torch.randn(*shape).to(EXACT_DTYPE).float()


def _qkv(L, copies=False):
    """q, k, v (B, H, L, HD); with copies, heads 0,1 and 2,3 share queries and keys (not values)."""
    heads = H // 2 if copies else H
    q, k = _fp16_exact(B, heads, L, HD), _fp16_exact(B, heads, L, HD)
    if copies:
        q, k = q.repeat_interleave(2, 1), k.repeat_interleave(2, 1)
    return q, k, _fp16_exact(B, H, L, HD)


def _run(cache, q, k, v):
    """The prompt (the first LP tokens) in one call, then one token per call; outputs along positions."""
    outs = [cache.attend(q[:, :, :LP], k[:, :, :LP], v[:, :, :LP])]
    for t in range(LP, q.shape[2]):
        outs.append(cache.attend(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]))
    return torch.cat(outs, 2)


# -- 1. clustering -----------------------------------------------------------------------------------
def _blobs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(20)
    return centres[truth] + 0.3 * torch.randn(60, 2, generator=gen), truth


def test_kmeans_recovers_separated_blobs_and_inertia_falls_with_k():
    points, truth = _blobs()
    labels, inertia = kmeans(points, 3, seed=1)
    assert _same_partition(labels, truth)
    assert torch.equal(labels, kmeans(points, 3, seed=1)[0])  # deterministic given the seed
    inertias = [kmeans(points, k, seed=1)[1] for k in (1, 2, 3)]
    assert inertias[0] > inertias[1] > inertias[2] == pytest.approx(inertia)
    # Inside a blob the points are ~0.3 from their centre: 60 points * 2 dims * 0.09, give or take.
    assert inertia < 20


def test_elbow_is_non_increasing_and_bends_at_the_true_k():
    points, _ = _blobs()
    curve = elbow(points, range(1, 9), seed=0)
    assert (curve[1:] <= curve[:-1] + 1e-9).all()
    drops = curve[:-1] - curve[1:]
    assert drops[1] > 10 * drops[2]  # going 2 -> 3 clusters gains far more than 3 -> 4
    samples = torch.stack([_blobs(s)[0] for s in range(3)])
    assert elbow(samples, [2, 3], seed=0)[1] < elbow(samples, [2, 3], seed=0)[0]


def test_agglomerative_recovers_blocks_of_a_distance_matrix():
    truth = torch.tensor([0, 1, 0, 2, 1, 2, 0])
    gen = torch.Generator().manual_seed(0)
    dist = torch.where(truth[:, None] == truth[None, :], 0.1, 1.0) + 0.05 * torch.rand(7, 7, generator=gen)
    dist = (dist + dist.T) / 2
    dist.fill_diagonal_(0)
    labels = agglomerative(dist, 3)
    assert torch.equal(labels, truth)  # canonical: numbered by first member, as truth is
    assert torch.equal(agglomerative(dist, 7), torch.arange(7))
    assert torch.equal(agglomerative(dist, 1), torch.zeros(7, dtype=torch.long))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_agglomerative_matches_scikit_learn_average_linkage(seed, k):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    features = torch.rand(12, 6, generator=torch.Generator().manual_seed(seed))
    dist = cosine_distance(features)
    ref = sklearn_cluster.AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    ref_labels = torch.as_tensor(ref.fit(dist.numpy()).labels_)
    assert _same_partition(agglomerative(dist, k), ref_labels)


def test_cosine_distance_and_redundancy():
    f = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    assert torch.allclose(cosine_distance(f), torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float64))
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 1.0, 1.8], [0.9, 0.5, 0.1], [0.3, 0.2, 0.4]])
    assert redundancy(scores, torch.tensor([0, 0, 1, 2])) == pytest.approx(1.0)  # one pair, in line
    assert redundancy(scores, torch.tensor([0, 1, 0, 2])) == pytest.approx(-1.0)  # one pair, opposed
    assert math.isnan(redundancy(scores, torch.arange(4)))  # no cluster shares heads


def test_static_membership_groups_heads_alike_over_samples():
    q, k, _ = _qkv(6, copies=True)
    features = head_score_features(q, k, 5)  # (B, H, 25): two samples of four heads
    assert torch.equal(static_membership(features, 2), torch.tensor([0, 0, 1, 1]))


# -- 2, 3, 4. attention ------------------------------------------------------------------------------
def test_one_cluster_per_head_is_the_full_cache():
    q, k, v = _qkv(LP + STEPS)
    chai, full = ChaiCache(B, H, HD, n_clusters=H), FullCache(B, H, HD)
    assert torch.allclose(_run(chai, q, k, v), _run(full, q, k, v), atol=1e-5)
    assert torch.equal(chai.membership, torch.arange(H).expand(B, H))


def test_copied_heads_cluster_together_and_lose_nothing():
    q, k, v = _qkv(LP + STEPS, copies=True)
    chai, full = ChaiCache(B, H, HD, n_clusters=2), FullCache(B, H, HD)
    assert torch.allclose(_run(chai, q, k, v), _run(full, q, k, v), atol=1e-5)
    assert torch.equal(chai.membership, torch.tensor([[0, 0, 1, 1]] * B))
    assert torch.equal(chai.reps, torch.tensor([[0, 2]] * B))
    assert chai.k_cache_nbytes() * 2 == full.k.numel() * full.k.element_size()


def _reference(q, k, v, membership, n_first, drop=False):
    """Per row, per head, per position: own attention before n_first, then the lowest-index head of
    the cluster's probabilities over positions 0..t, times the head's own values (zero when dropped)."""
    y = torch.zeros_like(v)
    scale = 1 / math.sqrt(q.shape[-1])
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            rep = min(j for j in range(q.shape[1]) if membership[b][j] == membership[b][h])
            for t in range(q.shape[2]):
                src = h if t < n_first else rep
                if drop and t >= n_first and rep != h:
                    continue
                p = torch.softmax((k[b, src, : t + 1] @ q[b, src, t]) * scale, 0)
                y[b, h, t] = p @ v[b, h, : t + 1]
    return y


@pytest.mark.parametrize("k_clusters,n_first", [(1, 5), (2, 5), (3, 3), (3, LP)])
def test_per_request_matches_a_slow_reference(k_clusters, n_first):
    q, k, v = _qkv(LP + STEPS)
    chai = ChaiCache(B, H, HD, n_clusters=k_clusters, n_first=n_first)
    y = _run(chai, q, k, v)
    assert len(chai.membership.unique()) == k_clusters
    assert torch.allclose(y, _reference(q, k, v, chai.membership.tolist(), n_first), atol=1e-5)


def test_per_request_membership_is_chais_pipeline_per_row():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    H8, n = 8, 5
    q, k = torch.randn(3, H8, LP, HD), torch.randn(3, H8, LP, HD)
    chai = ChaiCache(3, H8, HD, n_clusters=3, n_first=n)
    chai.attend(q, k, torch.randn(3, H8, LP, HD))
    for b in range(3):
        feats = torch.stack([torch.softmax((q[b, h, :n] @ k[b, h, :n].T / math.sqrt(HD)).masked_fill(
            torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf), -1).flatten() for h in range(H8)])
        unit = torch.nn.functional.normalize(feats.double(), dim=1)
        dist = (1 - unit @ unit.T).clamp_min(0).fill_diagonal_(0)
        ref = sklearn_cluster.AgglomerativeClustering(n_clusters=3, metric="precomputed", linkage="average")
        assert _same_partition(chai.membership[b], torch.as_tensor(ref.fit(dist.numpy()).labels_))


def test_static_membership_applies_to_every_row():
    q, k, v = _qkv(LP + STEPS)
    labels = [2, 0, 2, 1]  # canonical form: [0, 1, 0, 2], representatives 0, 1, 3
    chai = ChaiCache(B, H, HD, membership=labels, mode="static")
    y = _run(chai, q, k, v)
    assert torch.equal(chai.reps, torch.tensor([[0, 1, 3]] * B))
    assert torch.allclose(y, _reference(q, k, v, [labels] * B, 5), atol=1e-5)


# -- 5. controls -------------------------------------------------------------------------------------
def test_drop_zeros_the_other_heads_and_keeps_the_representatives():
    q, k, v = _qkv(LP + STEPS)
    labels = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    y = _run(ChaiCache(B, H, HD, membership=labels, mode="drop"), q, k, v)
    full = _run(FullCache(B, H, HD), q, k, v)
    assert torch.allclose(y, _reference(q, k, v, labels.tolist(), 5, drop=True), atol=1e-5)
    assert (y[0, [1, 3], 5:] == 0).all() and (y[1, [2, 3], 5:] == 0).all()
    assert torch.allclose(y[0, [0, 2]], full[0, [0, 2]], atol=1e-5)
    assert torch.allclose(y[:, :, :5], full[:, :, :5], atol=1e-5)  # before the clusters, every head


def test_random_mode_gives_k_non_empty_clusters_from_the_seed():
    H8 = 8
    a = ChaiCache(6, H8, HD, n_clusters=3, mode="random", seed=1)
    assert all(len(row.unique()) == 3 for row in a.membership)
    assert torch.equal(a.membership, ChaiCache(6, H8, HD, n_clusters=3, mode="random", seed=1).membership)
    assert not torch.equal(a.membership, ChaiCache(6, H8, HD, n_clusters=3, mode="random", seed=2).membership)
    q, k, v = (_fp16_exact(6, H8, LP + 2, HD) for _ in range(3))
    y = _run(a, q, k, v)
    assert torch.allclose(y, _reference(q, k, v, a.membership.tolist(), 5), atol=1e-5)


# -- 6. bytes and multiply-adds ----------------------------------------------------------------------
@pytest.mark.parametrize("mode,k_clusters", [("per-request", 1), ("per-request", 2), ("drop", 3)])
def test_nbytes_is_the_hand_count(mode, k_clusters):
    q, k, v = _qkv(LP + STEPS)
    chai, full = ChaiCache(B, H, HD, n_clusters=k_clusters, mode=mode), FullCache(B, H, HD)
    _run(chai, q, k, v), _run(full, q, k, v)
    T = LP + STEPS
    value_heads = k_clusters if mode == "drop" else H
    hand = 2 * B * k_clusters * T * HD + 2 * B * value_heads * T * HD + 8 * B * H + 8 * B * k_clusters
    assert chai.nbytes() == hand == sum(t.numel() * t.element_size() for t in chai.stored().values())
    assert set(chai.stored()) == {"k", "v", "membership", "representatives"}
    assert chai.k_cache_nbytes() * H == full.k.numel() * full.k.element_size() * k_clusters
    assert chai.k.dtype == chai.v.dtype == EXACT_DTYPE


def test_qk_multiply_adds_per_decode_step():
    assert qk_multiply_adds(32, 4, 100, 128) == (32 * 100 * 128, 4 * 100 * 128)
    chai = ChaiCache(B, H, HD, n_clusters=1)
    _run(chai, *_qkv(LP))
    assert chai.qk_multiply_adds() == (H * (LP + 1) * HD, (LP + 1) * HD)
    assert chai.qk_flops_saved() == (H - 1) * (LP + 1) * HD


# -- 7. end to end -----------------------------------------------------------------------------------
def test_decoder_generates_the_full_caches_tokens_with_a_cluster_per_head():
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=2, d_model=64, n_heads=8, position="rope"), 20).eval()
    prompt = torch.randint(2, 20, (2, 7))
    pos = torch.arange(7).expand(2, 7)
    base = torch.full((2,), 7)
    full = model.generate(prompt, pos, base, 6, 1, kv_cache=lambda i, b, h, hd: FullCache(b, h, hd))
    chai = model.generate(prompt, pos, base, 6, 1, kv_cache=lambda i, b, h, hd: ChaiCache(b, h, hd, n_clusters=8))
    assert torch.equal(chai, full)
    assert torch.equal(model.generate(prompt, pos, base, 6, 1), full)
    fewer = model.generate(prompt, pos, base, 6, 1, kv_cache=lambda i, b, h, hd: ChaiCache(b, h, hd, n_clusters=2))
    assert fewer.shape == full.shape and ((fewer >= 0) & (fewer < 20)).all()


# -- 8. refused settings -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(n_clusters=0), "n_clusters must be in 1..4"),
    (dict(n_clusters=5), "n_clusters must be in 1..4"),
    (dict(), "needs n_clusters"),
    (dict(n_clusters=2, n_first=0), "n_first must be at least 1"),
    (dict(n_clusters=2, mode="kmeans"), "unknown CHAI mode"),
    (dict(membership=[0, 1, 0], mode="static"), r"membership must be \(4,\) or \(2, 4\)"),
    (dict(membership=[[0, 1, 0, 1]] * 3, mode="static"), r"membership must be \(4,\) or \(2, 4\)"),
    (dict(membership=[0.0, 1.0, 0.0, 1.0], mode="static"), "integer cluster labels"),
    (dict(membership=[0, 2, 0, 2], mode="static"), "clusters is empty|one is empty"),
    (dict(membership=[0, 1, 0, 1], n_clusters=3, mode="static"), "one is empty"),
    (dict(membership=[0, -1, 0, 1], mode="static"), "must lie in"),
    (dict(mode="static"), "needs a membership"),
    (dict(membership=[0, 1, 0, 1], n_clusters=2), "makes its own membership"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(BadInput, match=message):
        ChaiCache(B, H, HD, **kwargs)


def test_a_prompt_shorter_than_n_first_is_refused():
    q, k, v = _qkv(3)
    with pytest.raises(BadInput, match="first 5 prompt tokens"):
        ChaiCache(B, H, HD, n_clusters=2).attend(q, k, v)
    with pytest.raises(BadInput):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(BadInput):
        agglomerative(torch.zeros(3, 3), 0)
