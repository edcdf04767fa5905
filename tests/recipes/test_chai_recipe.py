"""The chai recipe's logic that its smoke run does not check: which layers count as redundant, the claims'
metrics from measurements, the head patterns and the offline analysis, and the cache byte tally."""

import math

import pytest
import torch

from seqlab.kv_compression.heads import (
    ClusteredFactory, analyse_layer, halved_clusters, head_scores, informative_entries, redundant_layers, score_through,
)
from seqlab.models import ModelConfig, build
from seqlab.recipes import get_recipe
from seqlab.recipes.chai import _findings, cluster_counts, summarize
from seqlab.tasks.token_base import get_token_task


def test_a_layer_is_redundant_from_the_threshold_on_and_never_when_unmeasured():
    assert redundant_layers([0.49, 0.5, 0.9, math.nan], 0.5) == [False, True, True, False]
    assert halved_clusters([True, False, True], 8) == [4, 8, 4]
    assert cluster_counts(8) == [4, 2] and cluster_counts(16) == [8, 4] and cluster_counts(4) == [2, 1]


def _scores(accuracy, k_bytes, qk_kept, qk_full=100):
    return {"accuracy": accuracy, "exact_match": 0.0, "k_bytes": k_bytes, "qk_full": qk_full, "qk_kept": qk_kept}


def _measured(halved=True):
    out = {"full": {"mqar": _scores(0.95, 800, 100), "copy": _scores(0.90, 600, 100)}}
    for k, share in ((4, 0.5), (2, 0.25)):
        for mode, acc in (("per-request", 0.9), ("static", 0.8), ("random", 0.5), ("drop", 0.7)):
            bonus = 0.05 if (mode, k) == ("static", 2) else 0.0  # static comes closer at the smaller k
            out[f"{mode}.k{k}"] = {"mqar": _scores(acc, 800 * share, 100 * share),
                                   "copy": _scores(acc + bonus, 600 * share, 100 * share)}
    if halved:  # layers 0 and 2 of 3 halved: two sixths of the keys saved
        out["halved"] = {"mqar": _scores(0.94, 800 * 4 / 6, 100 * 4 / 6), "copy": _scores(0.87, 600 * 4 / 6, 100 * 4 / 6)}
    return out


def test_the_claims_metrics_come_from_the_measurements():
    m = summarize(_measured(), ks=[4, 2])
    assert m["halved.accuracy_drop"] == pytest.approx(0.03)  # the worse task's drop (copy), not the mean
    assert m["halved.k_cache_saved"] == pytest.approx(1 / 3)
    assert m["per-request.k4.k_cache_share"] == pytest.approx(0.5) and m["per-request.k2.qk_saved"] == pytest.approx(0.75)
    assert m["per_request_minus_static.k4"] == pytest.approx(0.1)
    assert m["per_request_minus_static.k2"] == pytest.approx(0.075)  # the mean over tasks: (0.1 + 0.05) / 2
    assert m["per_request_minus_static"] == pytest.approx(0.075)  # the smallest margin over k
    assert m["per_request_minus_random"] == pytest.approx(0.4)
    judged = {c["metric"]: c["holds"] for c in (claim.judge(m) for claim in get_recipe("chai").claims)}
    assert judged == {"halved.accuracy_drop": False, "halved.k_cache_saved": True,
                      "per_request_minus_static": True, "per_request_minus_random": True}


def test_without_a_redundant_layer_the_halving_claims_are_unmeasured_and_say_why():
    m = summarize(_measured(halved=False), ks=[4, 2])
    assert "halved.accuracy_drop" not in m and "halved.k_cache_saved" not in m
    judged = [claim.judge(m) for claim in get_recipe("chai").claims[:2]]
    assert all(c["ours"] is None and c["holds"] is False for c in judged)
    m.update({"n_redundant_layers": 0, "n_layers": 3, "n_heads": 8, "redundancy_threshold": 0.5})
    assert "not redundant" in _findings(m, [4, 2])[0]


def test_a_tie_at_ceiling_is_not_beating():
    measured = _measured(halved=False)
    for k in (4, 2):
        for mode in ("per-request", "static"):
            measured[f"{mode}.k{k}"] = {t: _scores(1.0, 1, 1) for t in ("mqar", "copy")}
    m = summarize(measured, ks=[4, 2])
    claim = next(c for c in get_recipe("chai").claims if c.metric == "per_request_minus_static")
    assert m["per_request_minus_static"] == 0.0 and claim.judge(m)["holds"] is False


@pytest.fixture(scope="module")
def model_and_task():
    torch.manual_seed(0)
    task = get_token_task("mqar", vocab_size=64, input_seq_len=32, num_kv_pairs=4)
    model = build(ModelConfig(n_layers=2, d_model=32, n_heads=4, position="rope"), task.vocab_size).eval()
    return model, task


def test_head_patterns_are_each_heads_causal_probabilities(model_and_task):
    model, task = model_and_task
    tokens, _ = task.batch(0, "train", 0, 5)
    window = 10
    layers = head_scores(model, tokens, window, batch=2)
    assert informative_entries(window).sum() == window * (window + 1) // 2 - 1
    assert len(layers) == 2 and layers[0].shape == (5, 4, window * (window + 1) // 2 - 1)
    # Rows 1 .. window-1 are kept whole, and each is a distribution over the keys it sees.
    assert torch.allclose(layers[1].sum(-1), torch.full((5, 4), float(window - 1)), atol=1e-4)


def test_the_offline_step_finds_two_groups_of_copied_heads():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 1, 40, generator=gen), torch.rand(6, 1, 40, generator=gen)
    heads = torch.cat([a.expand(6, 4, 40), b.expand(6, 4, 40)], 1) + 0.01 * torch.rand(6, 8, 40, generator=gen)
    layer = analyse_layer(heads, probe_k=2, ks=[4])
    assert layer.memberships[2] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert layer.redundancy > 0.99 and layer.redundancy_random < 0.9  # random clusters mix the two groups
    assert layer.elbow[1] < 0.01 * layer.elbow[0] and len(layer.elbow) == 8
    assert sorted(layer.memberships) == [2, 4]


def test_the_factory_counts_keys_and_qk_work_over_every_batch(model_and_task):
    model, task = model_and_task
    tokens, targets = task.batch(0, "test", 0, 10)
    L, hd = tokens.shape[1], 32 // 4
    full = score_through(model, tokens, targets, ClusteredFactory(model), batch=4)  # three batches: 4, 4, 2
    assert full["k_bytes"] == 2 * 4 * L * hd * 2  # layers x heads x tokens x head dim x 2 bytes
    mixed = score_through(model, tokens, targets, ClusteredFactory(model, [2, 4], "per-request"), batch=4)
    assert mixed["k_bytes"] == (2 + 4) * L * hd * 2
    assert (mixed["qk_full"], mixed["qk_kept"]) == (2 * 4 * (L + 1) * hd, (2 + 4) * (L + 1) * hd)
    with pytest.raises(Exception, match="one cluster count per attention layer"):
        ClusteredFactory(model, [2])
