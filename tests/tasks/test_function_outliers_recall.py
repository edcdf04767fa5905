"""Park et al. 2024's in-context tasks (function_outliers_recall.py): many-outlier and orthogonal-outlier regression and
vector-valued MQAR. Every point of random prompts is recomputed in plain Python (reference_functions.py)
from the drawn parameters and the prompt's xs: scored points of the outlier families against w . x,
outliers against Park's construction (the all-ones point; a u + b v orthogonal to w, rebuilt from the raw
draws), recall's queries against the argmax over the keys. Then the laws: the outlier rate at every
position and its independence between points, the clean points left as they were, the query choices,
E[y^2] on the scored points against error_scale, and the shifts each family accepts."""

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.function_classes import FUNCTIONS, SHIFTS, Prompts, get_function, parse_shift, shift_matrix
from seqlab.tasks.function_outliers_recall import ScoredPrompts
from tests.tasks.checks_functions import (
    CASE_NUMBERS,
    case,
    check_prompts,
    function_of,
    function_tests,
    params_as_lists,
    shared_function,
)
from tests.tasks.reference_functions import assert_matches, dot, orthogonal_outlier, outlier_point, vector_mqar

MANY, ORTHO, MQAR = "many-outlier-regression", "orthogonal-outlier-regression", "vector-mqar"
PARK = (MANY, ORTHO, MQAR)


def norm(v) -> float:
    return math.sqrt(math.fsum(a * a for a in v))


def many_knobs(r):
    return {"n_dims": r.randint(1, 24), "outlier_prob": r.choice([0.0, 0.3, 0.5, 0.9, 0.99])}


def ortho_knobs(r):
    return {"n_dims": r.randint(1, 24), "outlier_prob": r.choice([0.0, 0.2, 0.5, 0.9]),
            "orthogonal_to": r.choice(["w", "independent"])}


def mqar_knobs(r):
    # n_dims 1 is refused (test_vector_mqar_refuses_one_dimension)
    return {"n_dims": r.randint(2, 12), "n_pairs": r.randint(1, 8), "fresh_queries": r.random() < 0.7,
            "query_noise": r.choice([0.0, 0.0, 0.1, 1.0])}


def check_w(p, cfg, active):
    assert len(p["w"]) == cfg["n_dims"]


def check_ortho_params(p, cfg, active):
    """The outlier vectors are Park's construction from the raw draws, orthogonal to their direction."""
    check_w(p, cfg, active)
    if cfg["orthogonal_to"] == "w":
        assert p["orthogonal_to"] == [p["w"], p["w"]]
    for k, key in enumerate(("outlier_x", "outlier_y_token")):
        ref = p["orthogonal_to"][k]
        want = orthogonal_outlier(ref, p["gauss"][k][0], p["gauss"][k][1], p["coef"][k][0], p["coef"][k][1], active)
        assert all(abs(a - b) <= 1e-9 * norm(want) for a, b in zip(p[key], want)), (key, p[key], want)
        assert not any(p[key][active:])
        assert abs(dot(p[key][:active], ref[:active])) <= 1e-9 * norm(ref[:active]) * norm(p[key])


def check_outlier_points(name: str, c: dict, p) -> None:
    fc = function_of(c, name)
    active = c["active_dims"] or c["cfg"]["n_dims"]
    assert isinstance(p, ScoredPrompts) and p.scored.shape == p.ys.shape and p.scored.dtype == bool
    if c["cfg"]["outlier_prob"] == 0:
        assert p.scored.all()
    for j in range(2):
        fn = params_as_lists(fc, c, c["index"] + j)
        x_out, y_out = outlier_point(name, fn, active)
        for x, y, scored in zip(p.xs[j].tolist(), p.ys[j].tolist(), p.scored[j].tolist()):
            if scored:
                assert_matches("regression", y, dot(fn["w"], x), fn, x)
            else:
                assert all(abs(a - b) <= 2e-7 * norm(x_out) for a, b in zip(x, x_out)), (x, x_out)
                assert_matches("regression", y, y_out, fn, x)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_many_outlier_prompts_match_the_reference(number):
    c = case(number, many_knobs)
    note(f"knobs: {c}")
    check_outlier_points(MANY, c, check_prompts(MANY, c, check_params=check_w))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_orthogonal_outlier_prompts_match_the_reference(number):
    c = case(number, ortho_knobs)
    note(f"knobs: {c}")
    check_outlier_points(ORTHO, c, check_prompts(ORTHO, c, check_params=check_ortho_params))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_vector_mqar_prompts_match_the_reference(number):
    c = case(number, mqar_knobs)
    note(f"knobs: {c}")
    p = check_prompts(MQAR, c, check_params=lambda fn, cfg, active: fn == {})
    cfg, d = c["cfg"], c["cfg"]["n_dims"]
    first, active = 2 * cfg["n_pairs"], c["active_dims"] or d
    assert isinstance(p, ScoredPrompts) and p.scored.tolist() == [[i >= first for i in range(p.xs.shape[1])]] * 2
    for j in range(2):
        xs = p.xs[j].tolist()
        for i, y in enumerate(p.ys[j].tolist()):
            assert y in vector_mqar(xs, i, cfg["n_pairs"]), (i, y)
        if active == d:  # every token on the sphere of radius sqrt(d)
            assert all(math.isclose(norm(x), math.sqrt(d), rel_tol=1e-6) for x in xs)
        if cfg["query_noise"] == 0 and not cfg["fresh_queries"]:
            assert all(x in xs[0:first:2] for x in xs[first:])  # every query is a copy of a key


_many, _ortho, _mqar = (dict(zip(("examples", "pure", "prefix", "active", "moment"), function_tests(name, knobs)))
                        for name, knobs in ((MANY, many_knobs), (ORTHO, ortho_knobs), (MQAR, mqar_knobs)))
# The shared reference test checks no y of a family outside DETERMINISTIC (the tests above do), and the
# shared moment test averages every point: outliers and recall's context are not scored (tests below).
test_many_outlier_prompt_is_a_pure_function_of_its_index = _many["pure"]
test_many_outlier_short_prompt_is_a_prefix = _many["prefix"]
test_many_outlier_active_dims_zero_the_last_coordinates = _many["active"]
test_orthogonal_outlier_prompt_is_a_pure_function_of_its_index = _ortho["pure"]
test_orthogonal_outlier_short_prompt_is_a_prefix = _ortho["prefix"]
test_vector_mqar_prompt_is_a_pure_function_of_its_index = _mqar["pure"]
test_vector_mqar_short_prompt_is_a_prefix = _mqar["prefix"]
test_vector_mqar_active_dims_zero_the_last_coordinates = _mqar["active"]


@pytest.mark.parametrize("name, cfg", [(MANY, {}), (ORTHO, {"orthogonal_to": "independent"}),
                                       (MQAR, {"n_pairs": 3, "query_noise": 0.3})])
def test_masks_and_queries_of_a_short_prompt_are_a_prefix_too(name, cfg):
    fc = get_function(name, **cfg)
    long = fc.prompts(2, "test", 7, 6, n_points=40)
    for k in (1, 6, 7, 8, 23):
        short = fc.prompts(2, "test", 7, 6, n_points=k)
        for a, b in ((short.xs, long.xs), (short.ys, long.ys), (short.scored, long.scored)):
            assert np.array_equal(a, b[:, :k])


def test_orthogonal_outliers_under_the_curriculum_live_in_the_active_coordinates():
    fc = get_function(ORTHO)
    full = fc.prompts(3, "train", 0, 20)
    for active in (1, 2, 3, 11, 20):
        cut = fc.prompts(3, "train", 0, 20, active_dims=active)
        assert not cut.xs[:, :, active:].any() and np.array_equal(cut.scored, full.scored)
        kept = cut.scored  # the clean points are the full prompt's, cut
        assert np.array_equal(cut.xs[kept][:, :active], full.xs[kept][:, :active])
        for j in range(20):
            p = fc.params(3, "train", j, active_dims=active)
            assert np.all(cut.xs[j][~kept[j]] == p["outlier_x"].astype(np.float32))
            assert abs(p["outlier_x"] @ p["w"]) <= 1e-12 * np.linalg.norm(p["outlier_x"]) * np.linalg.norm(p["w"])
            if active == 1:  # nothing in one dimension is orthogonal to w but 0
                assert not p["outlier_x"].any() and not cut.ys[j][~kept[j]].any()


@pytest.mark.parametrize("name, prob, n", [(MANY, 0.9, 300), (ORTHO, 0.5, 600), (ORTHO, 0.1, 600)])
def test_outliers_are_independent_points_with_the_configured_probability(name, prob, n):
    fc = get_function(name, outlier_prob=prob)
    out = ~fc.prompts(5, "train", 0, n).scored
    points = out.shape[1]
    assert abs(out.mean() - prob) < 4 * math.sqrt(prob * (1 - prob) / out.size)
    # The same rate at every position, the last point (a query) included.
    assert np.all(np.abs(out.mean(axis=0) - prob) < 4.5 * math.sqrt(prob * (1 - prob) / n))
    # Independent points: binomial counts per prompt, uncorrelated neighbours.
    assert abs(out.sum(axis=1).var() / (points * prob * (1 - prob)) - 1) < 0.3
    assert abs(np.corrcoef(out[:, :-1].ravel(), out[:, 1:].ravel())[0, 1]) < 4 / math.sqrt(out[:, 1:].size)


@pytest.mark.parametrize("name", [MANY, ORTHO])
def test_outliers_overwrite_points_of_the_prompt_without_them(name):
    clean = get_function(name, outlier_prob=0).prompts(8, "test", 0, 50, n_points=60)
    low, high = (get_function(name, outlier_prob=q).prompts(8, "test", 0, 50, n_points=60) for q in (0.3, 0.8))
    assert clean.scored.all() and np.all(high.scored <= low.scored)  # outlier when u < prob: nested sets
    for p in (low, high):
        assert np.array_equal(p.xs[p.scored], clean.xs[p.scored]) and np.array_equal(p.ys[p.scored], clean.ys[p.scored])


def test_many_outlier_defaults_and_outliers_are_parks():
    fc = get_function(MANY)
    assert fc.config.to_json() == {"n_dims": 20, "n_points": 512, "outlier_prob": 0.9}
    p = fc.prompts(0, "train", 0, 20)
    assert np.all(p.xs[~p.scored] == 1) and np.all(p.ys[~p.scored] == 1)
    assert not np.all(p.xs[p.scored] == 1, axis=1).any()


def test_orthogonal_outliers_repeat_within_a_prompt_and_avoid_their_direction():
    assert get_function(ORTHO).config.to_json() == {"n_dims": 20, "n_points": 101, "outlier_prob": 0.5,
                                                    "orthogonal_to": "w"}
    for mode in ("w", "independent"):
        fc = get_function(ORTHO, orthogonal_to=mode)
        p = fc.prompts(1, "train", 0, 300)
        cosines, raw = [], []
        for j in range(300):
            fn = fc.params(1, "train", j)
            rows = p.xs[j][~p.scored[j]]
            assert np.all(rows == rows[:1]) and np.all(p.ys[j][~p.scored[j]] == np.float32(fn["outlier_y_token"][0]))
            for k, key in enumerate(("outlier_x", "outlier_y_token")):
                v, ref = fn[key], fn["orthogonal_to"][k]
                assert abs(v @ ref) <= 1e-12 * np.linalg.norm(v) * np.linalg.norm(ref)
            cosines.append(abs(fn["outlier_x"] @ fn["w"]) / np.linalg.norm(fn["outlier_x"]) / np.linalg.norm(fn["w"]))
            raw.append(np.concatenate([fn["gauss"].ravel(), fn["coef"].ravel()]))
        # "independent" is Park's released code: the outlier avoids an unrelated direction, not w.
        assert max(cosines) < 1e-12 if mode == "w" else np.mean(cosines) > 0.1
        raw = np.concatenate(raw)
        assert abs(raw.mean()) < 0.02 and abs(raw.var() - 1) < 0.03  # the raw draws are standard normals


def test_vector_mqar_defaults_are_parks():
    fc = get_function(MQAR)
    assert fc.config.to_json() == {"n_dims": 20, "n_points": 129, "n_pairs": 64, "fresh_queries": True,
                                   "query_noise": 0.0}
    assert get_function(MQAR, n_pairs=8).config.n_points == 17
    assert get_function(MQAR, n_pairs=8, n_points=40).config.n_points == 40
    p = fc.prompts(0, "train", 0, 30)
    assert p.scored.sum(axis=1).tolist() == [1] * 30 and p.scored[:, -1].all() and not p.ys[:, :-1].any()
    assert np.allclose(np.linalg.norm(p.xs, axis=2), math.sqrt(20), rtol=1e-6)


@pytest.mark.parametrize("fresh", [True, False])
def test_queries_copy_each_key_equally_often_or_are_fresh_one_time_in_n_pairs_plus_one(fresh):
    fc = get_function(MQAR, n_dims=6, n_pairs=4, fresh_queries=fresh)
    p = fc.prompts(2, "train", 0, 500, n_points=8 + 40)
    keys, values, queries = p.xs[:, 0:8:2], p.xs[:, 1:8:2], p.xs[:, 8:]
    same = np.all(queries[:, :, None, :] == keys[:, None, :, :], axis=3)  # (n, queries, keys)
    assert same.sum(axis=2).max() <= 1
    counts = np.append(same.sum(axis=(0, 1)), (~same.any(axis=2)).sum())  # per key, then fresh
    probs = np.array([1 / 5] * 5 if fresh else [1 / 4] * 4 + [0])
    total = queries.shape[0] * queries.shape[1]
    assert np.all(np.abs(counts - total * probs) <= 5 * np.sqrt(total * probs * (1 - probs)))
    copied = same.any(axis=2)  # a copied key's target is its own value's first coordinate
    want = np.einsum("nqk,nk->nq", same.astype(np.float32), values[:, :, 0])
    assert np.array_equal(p.ys[:, 8:][copied], want[copied])
    assert np.allclose(np.linalg.norm(queries, axis=2), math.sqrt(6), rtol=1e-6)


def test_noisy_queries_stay_on_the_sphere_near_their_key():
    fc = get_function(MQAR, n_pairs=16, query_noise=0.1, fresh_queries=False)
    p = fc.prompts(0, "test", 0, 300, n_points=32 + 10)
    keys, queries = p.xs[:, 0:32:2].astype(np.float64), p.xs[:, 32:].astype(np.float64)
    assert np.allclose(np.linalg.norm(queries, axis=2), math.sqrt(20), rtol=1e-6)
    best = (np.einsum("nqd,nkd->nqk", queries, keys) / 20).max(axis=2)  # cosine with the nearest key
    assert 0.99 < best.mean() < 0.999 and best.max() < 1 - 1e-6  # about 1 / sqrt(1 + 0.1^2), never a copy


@pytest.mark.parametrize("name, kw, n, n_points", [
    (MANY, {}, 300, None), (ORTHO, {}, 1000, None), (ORTHO, {"orthogonal_to": "independent", "n_dims": 7}, 1000, None),
    (MQAR, {}, 400, 128 + 25),
])
def test_mean_squared_scored_output_is_the_error_scale(name, kw, n, n_points):
    fc = get_function(name, **kw)
    p = fc.prompts(11, "train", 0, n, n_points=n_points)
    y = p.ys[p.scored].astype(np.float64)
    assert math.isclose(np.mean(y**2), fc.error_scale, rel_tol=0.08), (np.mean(y**2), fc.error_scale)


def test_registered_with_kinds_descriptions_and_error_scales():
    for name in PARK:
        fc = get_function(name)
        assert name in FUNCTIONS and fc.kind == "regression" and fc.describe() and "\n" not in fc.describe()
        p = fc.prompts(0, "train", 0, 2)
        assert isinstance(p, ScoredPrompts) and isinstance(p, Prompts)
    assert get_function(MANY).error_scale == 20 and get_function(ORTHO, n_dims=7).error_scale == 7
    assert get_function(MQAR).error_scale == 1
    empty = get_function(MQAR, n_dims=3).prompts(0, "train", 4, 0, n_points=5)
    assert empty.xs.shape == (0, 5, 3) and empty.scored.shape == (0, 5)


@pytest.mark.parametrize("name, params, message", [
    (MANY, {"outlier_prob": 1.0}, "invalid value for 'task.outlier_prob'"),
    (MANY, {"outlier_prob": -0.1}, "invalid value for 'task.outlier_prob'"),
    (ORTHO, {"outlier_prb": 0.5}, "did you mean 'task.outlier_prob'"),
    (ORTHO, {"orthogonal_to": "v"}, "invalid value for 'task.orthogonal_to'"),
    (MQAR, {"n_pairs": 0}, "invalid value for 'task.n_pairs'"),
    (MQAR, {"n_pairs": "many"}, "invalid value for 'task.n_pairs'"),
    (MQAR, {"query_noise": -1}, "invalid value for 'task.query_noise'"),
    (MQAR, {"n_pair": 3}, "did you mean 'task.n_pairs'"),
])
def test_bad_knobs_are_bad_input(name, params, message):
    with pytest.raises(BadInput) as e:
        get_function(name, **params)
    assert message in str(e.value) and "\n" not in str(e.value)


ACCEPTED = {
    MANY: set(SHIFTS) - {"orthogonal"},
    ORTHO: {s for s in SHIFTS if s.startswith(("scale-x", "scale-y"))} | {"overlapping", "noisy-y"},
    MQAR: set(SHIFTS) - {"random-quadrants", "orthogonal", "overlapping"},
}


@pytest.mark.parametrize("name", PARK)
def test_each_family_refuses_the_shifts_that_would_not_mean_what_they_say(name):
    fc = get_function(name, n_points=9)
    assert set(fc.shifts()) == ACCEPTED[name]
    for s in SHIFTS:
        if s in ACCEPTED[name]:
            fc.prompts(0, "test", 0, 2, shift=s)
        else:
            with pytest.raises(BadInput, match=name):
                fc.prompts(0, "test", 0, 2, shift=s)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_shifts_act_on_every_point_and_keep_the_scored_points(number):
    """test_function_shifts.py's definitions, on these families: a shift moves outliers and recall's tokens
    like any point, and scored ys are still the family's y of the shifted xs."""
    r = random.Random(number)
    name, d = r.choice(PARK), r.randint(2, 12)
    cfg = {"n_dims": d, **({"n_pairs": r.randint(1, 4)} if name == MQAR else {"outlier_prob": r.choice([0.3, 0.9])})}
    fc = shared_function(name, tuple(sorted(cfg.items())))
    shift = parse_shift(r.choice(fc.shifts()))
    seed, split, index = r.getrandbits(16), r.choice(["train", "test"]), r.randrange(10**6)
    kw = dict(n_points=r.randint(1, 2 * d + 6), active_dims=None if r.random() < 0.5 else r.randint(1, d))
    note(f"{name} {cfg} {shift.name} {seed} {split} {index} {kw}")
    active = kw["active_dims"] or d
    got = fc.prompts(seed, split, index, 2, **kw, shift=shift.name)
    plain = fc.prompts(seed, split, index, 2, **kw)
    assert np.array_equal(got.scored, plain.scored) and not got.xs[:, :, active:].any()
    x, x0 = got.xs.astype(np.float64), plain.xs.astype(np.float64)
    if shift.name in ("skewed", "half-subspace"):
        want = fc.prompts(seed, split, index, 2, n_points=kw["n_points"]).xs.astype(np.float64) @ shift_matrix(
            shift.name, seed, d)
        want[:, :, active:] = 0
        assert np.allclose(x, want, rtol=1e-5, atol=1e-5)
    elif shift.name.startswith("scale-x"):
        assert np.allclose(x, shift.factor * x0, rtol=1e-6, atol=0)
    elif shift.acts_on == "outputs":
        assert np.array_equal(got.xs, plain.xs)
        if shift.name.startswith("scale-y"):
            assert np.allclose(got.ys, shift.factor * plain.ys, rtol=1e-6, atol=1e-30)
    elif shift.name == "random-quadrants":
        assert np.array_equal(np.abs(got.xs[:, :-1]), np.abs(plain.xs[:, :-1]))
        signs = np.sign(x[:, :-1])
        assert np.all((signs == signs[:, :1]) | (signs == 0) | (signs[:, :1] == 0))
        assert np.array_equal(got.xs[:, -1], plain.xs[:, -1])
    else:  # overlapping: the query is a copy of a context point, outliers included
        assert np.array_equal(got.xs[:, :-1], plain.xs[:, :-1])
        if x.shape[1] > 1:
            assert all(any(np.array_equal(x[j, -1], row) for row in x[j, :-1]) for j in range(2))
    if shift.acts_on == "outputs":
        return
    for j in range(2):
        xs, ys = got.xs[j].tolist(), got.ys[j].tolist()
        if name == MQAR:
            assert all(y in vector_mqar(xs, i, cfg["n_pairs"]) for i, y in enumerate(ys))
            continue
        fn = {k: v.tolist() for k, v in fc.params(seed, split, index + j, active_dims=kw["active_dims"]).items()}
        for xi, yi, scored, y0 in zip(xs, ys, got.scored[j].tolist(), plain.ys[j].tolist()):
            if scored:
                assert_matches("regression", yi, dot(fn["w"], xi), fn, xi)
            else:  # an outlier's y, which no input or query shift changes
                assert yi == y0


@pytest.mark.parametrize("name", PARK)
def test_sample_record_marks_the_scored_points(name):
    fc = get_function(name, n_points=9, **({"n_pairs": 3} if name == MQAR else {}))
    rec = fc.sample_record(3, "test", 12)
    assert json.loads(json.dumps(rec)) == rec
    p = fc.prompts(3, "test", 12, 1)
    meta = rec["meta"]
    assert meta["scored"] == p.scored[0].tolist() and meta["answer"] == p.ys[0].tolist()
    assert meta["function"] == {k: v.tolist() for k, v in fc.params(3, "test", 12).items()}


@pytest.mark.parametrize("name, kw", [(MANY, {}), (ORTHO, {}), (MQAR, {"n_pairs": 3})])
def test_the_sampled_target_is_a_scored_point(name, kw):
    # Issue #18: the target was the last y even when that point is an outlier, or a key of vector-mqar.
    fc = get_function(name, n_points=9, **kw)
    cut_short = 0
    for i in range(60):
        rec = fc.sample_record(3, "test", i)
        p = fc.prompts(3, "test", i, 1)
        scored = p.scored[0]
        k = rec["meta"]["target_point"]
        assert rec["meta"]["scored"] == scored.tolist()
        if not scored.any():
            assert k is None and rec["target"] == ""
            continue
        assert k == int(np.flatnonzero(scored)[-1]) and scored[k]
        assert math.isclose(float(rec["target"]), float(p.ys[0, k]), abs_tol=5.001e-5)
        assert len(rec["prompt"].split("; ")) == k + 1 and rec["prompt"].endswith(" ->")
        cut_short += k < 8
    assert cut_short > 0 or name == MQAR  # outliers end some prompts; vector-mqar's last point is a query


def test_vector_mqar_refuses_one_dimension():
    with pytest.raises(BadInput, match="n_dims >= 2"):
        get_function(MQAR, n_dims=1)
