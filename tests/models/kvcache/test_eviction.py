"""Eviction caches: SnapKV keeps what the prompt's last queries look at, PyramidKV's budgets fall with
depth, WindowCache keeps the recent tokens; attention over what they keep is ordinary attention."""

import math

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.kvcache.base import EXACT_DTYPE, FullCache, exact_causal
from seqlab.models.kvcache.eviction import (
    PyramidKVCache,
    SnapKVCache,
    WindowCache,
    pyramid_budgets,
    snapkv_positions,
    snapkv_scores,
)


def _qkv(B, H, L, hd, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, hd, generator=g) for _ in range(3)]


def test_snapkv_keeps_the_key_the_last_queries_look_at_and_drops_an_ignored_one():
    B, H, Lp, hd, window, budget = 1, 2, 12, 4, 3, 5
    q, k, v = torch.zeros(B, H, Lp, hd), torch.zeros(B, H, Lp, hd), torch.randn(B, H, Lp, hd)
    q[:, :, -window:, 0] = 10.0  # every window query looks along the first axis
    hot = [2, 5]  # the key each head's window queries attend to most
    for h, pos in enumerate(hot):
        k[0, h, pos, 0] = 10.0
        k[0, h, 7, 0] = -10.0  # a key no query attends to
    cache = SnapKVCache(B, H, hd, budget, window=window, kernel=1)
    cache.attend(q, k, v)
    kept = cache.kept_positions()
    assert kept.shape == (B, H, budget)
    for h, pos in enumerate(hot):
        row = kept[0, h].tolist()
        assert pos in row and 7 not in row
        assert row == sorted(row) and row[-window:] == list(range(Lp - window, Lp))
    assert kept[0, 0].tolist() != kept[0, 1].tolist()  # the heads chose for themselves
    # A budget of only the window keeps the window.
    only_window = SnapKVCache(B, H, hd, window, window=window, kernel=1)
    only_window.attend(q, k, v)
    assert only_window.kept_positions()[0, 0].tolist() == list(range(Lp - window, Lp))


def _reference_snapkv(q, k, budget, window, kernel, pooling):
    """SnapKV with plain loops, in float64: pooled scores and kept positions per (batch, head)."""
    B, H, Lp, hd = k.shape
    q, k = q.double().tolist(), k.double().tolist()
    n, half = Lp - window, kernel // 2
    scores, kept = {}, {}
    for b in range(B):
        for h in range(H):
            votes = [0.0] * n
            for j in range(Lp - window, Lp):  # a window query sees the keys up to itself
                logits = [sum(a * c for a, c in zip(q[b][h][j], k[b][h][i])) / math.sqrt(hd) for i in range(j + 1)]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights)
                for i in range(n):
                    votes[i] += weights[i] / total
            pooled = []
            for i in range(n):
                near = [votes[t] for t in range(i - half, i + half + 1) if 0 <= t < n]
                pooled.append(sum(near) / kernel if pooling == "avg" else max(near))  # padding counts as 0
            best = sorted(range(n), key=lambda i: -pooled[i])[: budget - window]
            scores[b, h] = pooled
            kept[b, h] = sorted(best) + list(range(n, Lp))
    return scores, kept


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_snapkv_selection_matches_a_plain_loop(pooling, kernel):
    B, H, Lp, hd, budget, window = 2, 3, 20, 8, 10, 4
    q, k, _ = _qkv(B, H, Lp, hd, seed=kernel)
    q = q * 2  # sharper attention, so the scores differ clearly
    ref_scores, ref_kept = _reference_snapkv(q, k, budget, window, kernel, pooling)
    scores = snapkv_scores(q, k, window, kernel, pooling)
    kept = snapkv_positions(q, k, budget, window, kernel, pooling)
    for (b, h), expected in ref_kept.items():
        assert torch.allclose(scores[b, h].double(), torch.tensor(ref_scores[b, h], dtype=torch.float64), atol=1e-5)
        if pooling == "avg":
            assert kept[b, h].tolist() == expected
        else:  # max pooling makes plateaus: ties may be broken either way, the kept scores may not differ
            pooled = ref_scores[b, h]
            got = sorted((pooled[i] for i in kept[b, h, : budget - window].tolist()), reverse=True)
            want = sorted((pooled[i] for i in expected[: budget - window]), reverse=True)
            assert got == pytest.approx(want, abs=1e-9)
            assert kept[b, h].tolist() == sorted(kept[b, h].tolist())


def _caches(B, H, hd):
    return {
        "snapkv": SnapKVCache(B, H, hd, budget=7, window=3, kernel=3),
        "snapkv_max": SnapKVCache(B, H, hd, budget=7, window=3, kernel=5, pooling="max"),
        "pyramid_layer0": PyramidKVCache(B, H, hd, budget=7, layer=0, n_layers=3, window=3, kernel=3),
        "pyramid_top": PyramidKVCache(B, H, hd, budget=7, layer=2, n_layers=3, window=3, kernel=3),
        "window": WindowCache(B, H, hd, window=5),
    }


@pytest.mark.parametrize("name", list(_caches(1, 1, 1)))
def test_attention_through_a_cache_is_attention_over_what_it_keeps(name):
    B, H, Lp, hd, steps = 2, 2, 16, 8, 4
    cache = _caches(B, H, hd)[name]
    q, k, v = _qkv(B, H, Lp + steps, hd, seed=3)
    y = cache.attend(q[:, :, :Lp], k[:, :, :Lp], v[:, :, :Lp])
    assert torch.allclose(y, exact_causal(q[:, :, :Lp], k[:, :, :Lp], v[:, :, :Lp]), atol=1e-6)
    assert cache.dense()[0].shape[2] < Lp  # it really dropped tokens
    for t in range(Lp, Lp + steps):
        qt, kt, vt = q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1]
        K, V = cache.dense()
        keys, values = torch.cat([K.float(), kt], 2), torch.cat([V.float(), vt], 2)
        expected = torch.softmax(qt @ keys.transpose(-1, -2) / math.sqrt(hd), -1) @ values
        assert torch.allclose(cache.attend(qt, kt, vt), expected, atol=1e-4)
        assert torch.equal(cache.dense()[0][:, :, -1:], kt.to(EXACT_DTYPE))  # the new token is kept


def test_snapkv_with_room_for_the_whole_prompt_is_the_full_cache():
    B, H, Lp, hd, steps = 2, 3, 12, 8, 5
    q, k, v = _qkv(B, H, Lp + steps, hd, seed=4)
    full, snap = FullCache(B, H, hd), SnapKVCache(B, H, hd, budget=Lp, window=4)
    spans = [(0, Lp)] + [(t, t + 1) for t in range(Lp, Lp + steps)]
    for a, b in spans:
        args = q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]
        assert torch.equal(snap.attend(*args), full.attend(*args))
    assert all(torch.equal(s, f) for s, f in zip(snap.dense(), full.dense()))
    assert snap.kept_positions()[0, 0].tolist() == list(range(Lp + steps))


@pytest.mark.parametrize("Lp", [2, 10])
def test_window_cache_keeps_exactly_the_last_window_tokens(Lp):
    B, H, hd, window, steps = 2, 2, 4, 4, 6
    q, k, v = _qkv(B, H, Lp + steps, hd, seed=5)
    full, recent = FullCache(B, H, hd), WindowCache(B, H, hd, window)
    spans = [(0, Lp)] + [(t, t + 1) for t in range(Lp, Lp + steps)]
    for a, b in spans:
        args = q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]
        full.attend(*args)
        recent.attend(*args)
        K, V = recent.dense()
        assert K.shape[2] == min(window, b)
        assert torch.equal(K, full.k[:, :, -window:]) and torch.equal(V, full.v[:, :, -window:])


def test_nbytes_counts_exactly_what_is_kept():
    B, H, hd, Lp, steps = 2, 3, 8, 15, 3
    q, k, v = _qkv(B, H, Lp + steps, hd, seed=6)
    fp16 = 2
    pyramid = PyramidKVCache(B, H, hd, budget=6, layer=0, n_layers=2, window=2)
    expected_rows = {"snapkv": 6, "pyramid": pyramid.layer_budget, "window": 4}
    caches = {"snapkv": SnapKVCache(B, H, hd, budget=6, window=2), "pyramid": pyramid,
              "window": WindowCache(B, H, hd, window=4)}
    assert pyramid.layer_budget == 10  # pyramid_budgets(6, 2, 20, 2): 2 + round(7.8), 2 + round(0.2)
    for name, cache in caches.items():
        cache.attend(q[:, :, :Lp], k[:, :, :Lp], v[:, :, :Lp])
        for t in range(Lp, Lp + steps):
            cache.attend(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1])
        rows = expected_rows[name] + (steps if name != "window" else 0)
        assert set(cache.stored()) == {"k", "v"}  # kept positions are for inspection, not stored
        assert cache.nbytes() == 2 * B * H * rows * hd * fp16
        assert cache.nbytes() == sum(t.numel() * t.element_size() for t in cache.stored().values())


def _generate(model, prompt, kv_cache):
    B, Lp = prompt.shape
    return model.generate(prompt, torch.arange(Lp).expand(B, Lp), torch.full((B,), Lp), 6, 1, kv_cache=kv_cache)


def test_a_decoder_generates_through_eviction_caches():
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=2, d_model=64, n_heads=2, position="rope"), 20).eval()
    prompt = torch.randint(3, 20, (2, 10), generator=torch.Generator().manual_seed(7))
    full = _generate(model, prompt, lambda i, B, H, hd: FullCache(B, H, hd))
    roomy = _generate(model, prompt, lambda i, B, H, hd: SnapKVCache(B, H, hd, budget=10, window=4))
    # Layer 0's pyramid budget (16) is more than the prompt: every layer falls back to 10, the whole prompt.
    roomy_pyramid = _generate(model, prompt, lambda i, B, H, hd: PyramidKVCache(B, H, hd, 10, i, 2, window=4))
    assert torch.equal(roomy, full) and torch.equal(roomy_pyramid, full)

    made = []

    def tight(i, B, H, hd):
        made.append(PyramidKVCache(B, H, hd, budget=6, layer=i, n_layers=2, window=2, kernel=3))
        return made[-1]

    tokens = _generate(model, torch.cat([prompt, prompt], 1), tight)
    assert tokens.shape == (2, 6) and ((tokens >= 0) & (tokens < 20)).all()
    fed = 5  # the sixth token is picked, never fed back
    assert [c.dense()[0].shape[2] for c in made] == [10 + fed, 2 + fed]  # pyramid_budgets(6, 2, 20, 2)


@pytest.mark.parametrize("make", [
    lambda: SnapKVCache(1, 1, 4, budget=3, window=4),
    lambda: SnapKVCache(1, 1, 4, budget=8, window=0),
    lambda: SnapKVCache(1, 1, 4, budget=8, window=2, kernel=0),
    lambda: SnapKVCache(1, 1, 4, budget=8, window=2, kernel=4),
    lambda: SnapKVCache(1, 1, 4, budget=8, window=2, pooling="mean"),
    lambda: WindowCache(1, 1, 4, window=0),
    lambda: PyramidKVCache(1, 1, 4, budget=8, layer=2, n_layers=2, window=2),
    lambda: PyramidKVCache(1, 1, 4, budget=8, layer=0, n_layers=2, window=2, beta=0.5),
    lambda: pyramid_budgets(8, 0),
])
def test_bad_settings_are_refused(make):
    with pytest.raises(BadInput):
        make()


@pytest.mark.parametrize("mean, n_layers, beta, window", [(64, 8, 20, 0), (100, 32, 20, 8), (37, 5, 3, 4),
                                                          (10, 2, 20, 4), (513, 7, 2.5, 16)])
def test_pyramid_budgets_fall_with_depth_and_average_the_budget(mean, n_layers, beta, window):
    budgets = pyramid_budgets(mean, n_layers, beta, window)
    assert len(budgets) == n_layers
    assert abs(sum(budgets) / n_layers - mean) <= 0.5
    assert all(a >= b for a, b in zip(budgets, budgets[1:])) and budgets[0] > budgets[-1]
    assert min(budgets) >= window


def test_pyramid_budgets_by_hand():
    assert pyramid_budgets(64, 5, 4) == [112, 88, 64, 40, 16]  # m / beta = 16, 2m - 16 = 112, steps of 24
    assert pyramid_budgets(40, 3, 1, window=8) == [40, 40, 40]  # beta 1: no pyramid
    assert pyramid_budgets(40, 1, 20) == [40]
