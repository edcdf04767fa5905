"""The hmm task: likelihoods, predictive distributions and the chance that two sequences coincide against
brute-force sums over every hidden path and every sequence, the sampler against the exact distribution, the
entropy rate against cases known in closed form, the token layout, the split and the refusals."""

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.hmm import HASHED_SPLIT_BITS, HMMLanguage, language, language_of
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where

DEFAULTS = {"n_states": 8, "n_symbols": 16, "length": 64, "concentration": 0.2, "hmm_seed": 0}


def by_paths(lang: HMMLanguage, symbols) -> float:
    """p(x) by its definition: the sum over every hidden path of p(path) p(x | path), with no recursion."""
    if len(symbols) == 0:
        return 1.0
    total = 0.0
    for path in itertools.product(range(len(lang.initial)), repeat=len(symbols)):
        p = lang.initial[path[0]]
        for t, (s, x) in enumerate(zip(path, symbols)):
            p *= (lang.transition[path[t - 1], s] if t else 1.0) * lang.emission[s, x]
        total += p
    return total


def every_sequence(lang: HMMLanguage, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sequence of `length` (rows, in lexicographic order) and its probability: the plain forward recursion,
    unnormalised, run on all of them at once."""
    V = lang.emission.shape[1]
    seqs = np.array(list(itertools.product(range(V), repeat=length)), dtype=np.int64)
    alpha = lang.initial[None, :] * lang.emission[:, seqs[:, 0]].T  # (N, S): p(x_1, s_1)
    for t in range(1, length):
        alpha = (alpha @ lang.transition) * lang.emission[:, seqs[:, t]].T
    return seqs, alpha.sum(1)


def log_forward(lang: HMMLanguage, symbols) -> np.ndarray:
    """ln p(x_1 .. x_t) for t = 1 .. n by the forward recursion in log space, unnormalised: log-sum-exp over the
    previous states."""
    with np.errstate(divide="ignore"):
        log_t, log_e = np.log(lang.transition), np.log(lang.emission)
        log_a = np.log(lang.initial) + log_e[:, symbols[0]]

    def total(a):
        m = a.max()
        return m + math.log(np.exp(a - m).sum()) if np.isfinite(m) else -math.inf

    out = [total(log_a)]
    for x in symbols[1:]:
        z = log_a[:, None] + log_t  # z[i, j] = ln p(x_<t, s_{t-1} = i) + ln p(j | i)
        m = np.max(z, axis=0)
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore"):
            log_a = m + np.log(np.exp(z - m).sum(0)) + log_e[:, x]
        out.append(total(log_a))
    return np.asarray(out)


def knobs(r: random.Random) -> dict:
    if r.random() < 0.1:
        return {}
    V = r.choice([2, 3, 4, r.randint(2, 40)])
    least = math.ceil(math.log(64) / math.log(V) - 1e-9)  # the shortest length with 64 sequences
    return {"n_states": r.choice([1, 2, 3, r.randint(1, 12)]), "n_symbols": V,
            "length": max(1, least + r.choice([-2, -1, 0, 4, 8, 12, 16, 24, 40]) + r.randint(0, 3)),
            "concentration": r.choice([0.01, 0.1, 0.3, 0.3, 1.0, 5.0, 5.0]), "hmm_seed": r.randint(0, 5)}


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_every_example_is_laid_out_and_scored_by_the_true_model(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    c = {**DEFAULTS, **cfg}
    S, V, L = c["n_states"], c["n_symbols"], c["length"]
    lang = language_of(S, V, c["concentration"], c["hmm_seed"])
    if V ** L < 64:
        with pytest.raises(BadInput, match=f"only {V ** L} distinct sequences, too few to split"):
            task_of("hmm", cfg)
        return
    enumerable = V ** L <= 2 ** 14
    if enumerable:
        seqs, probs = every_sequence(lang, L)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        collision = -math.log2((probs ** 2).sum())
    crude = -L * math.log2(lang.emission.max())  # p(x) <= (max emission) ** L
    try:
        task = task_of("hmm", cfg)
    except BadInput as e:
        assert "too peaked" in str(e) and "\n" not in str(e)
        # -log2 of the likeliest sequence's chance is at most the collision entropy, and the crude bound at most that
        assert crude < HASHED_SPLIT_BITS
        if enumerable:
            assert collision < HASHED_SPLIT_BITS + 1e-9
        return
    if enumerable:
        assert collision > HASHED_SPLIT_BITS - 1e-9
        assert crude - 1e-9 <= task.problem_bits() <= -math.log2(probs.max()) + 1e-9  # a valid, tighter bound
    ex = task.example(seed, split, i)  # an accepted setting reaches both splits
    scored = check_contract(task, ex)
    tokens, targets, states = list(ex.tokens), list(ex.targets), ex.meta["states"]
    assert task.vocab_size == V + 1 and task.max_length == L and len(tokens) == L
    assert scored == list(range(L)) and IGNORE not in targets and V not in targets
    assert tokens[0] == V and tokens[1:] == targets[:-1] and ex.meta["answer"] == targets
    assert len(states) == L and all(0 <= s < S for s in states)
    assert all(lang.emission[s, x] > 0 for s, x in zip(states, targets))  # each symbol can come from its state
    assert all(lang.transition[a, b] > 0 for a, b in zip(states, states[1:]))
    want = math.log(by_paths(lang, targets)) if S ** L <= 729 else log_forward(lang, targets)[-1]
    assert ex.meta["log_likelihood"] == pytest.approx(want, rel=1e-9, abs=1e-9)
    if enumerable:
        index = int(np.dot(targets, V ** np.arange(L - 1, -1, -1)))  # its row in lexicographic order
        assert list(seqs[index]) == targets
        assert ex.meta["log_likelihood"] == pytest.approx(math.log(probs[index]), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("S, V, L", [(1, 3, 3), (2, 2, 4), (3, 3, 3), (2, 3, 2), (3, 2, 4)])
def test_tiny_languages_sum_to_one_and_predict_by_brute_force(S, V, L):
    for hmm_seed, concentration in itertools.product(range(3), (0.05, 0.5, 3.0)):
        lang = language_of(S, V, concentration, hmm_seed)
        seqs = list(itertools.product(range(V), repeat=L))
        assert sum(math.exp(lang.log_likelihood(s)) for s in seqs) == pytest.approx(1.0, abs=1e-12)
        for s in seqs:
            p = by_paths(lang, s)
            ll = lang.log_likelihood(s)
            assert ll == (pytest.approx(math.log(p), abs=1e-12) if p > 0 else -math.inf)
            assert lang.surprisal_bits(s).sum() == pytest.approx(-ll / math.log(2), abs=1e-12)
            pred = lang.predictive(s)
            assert pred.shape == (L + 1, V)
            for t in range(L + 1):  # p(v | x_1..x_t) = p(x_1..x_t, v) / p(x_1..x_t)
                prefix = by_paths(lang, s[:t])
                if prefix == 0:
                    assert np.isnan(pred[t]).all()  # no prediction after an impossible prefix
                    continue
                assert pred[t].sum() == pytest.approx(1.0, abs=1e-12)
                assert np.allclose(pred[t], [by_paths(lang, (*s[:t], v)) / prefix for v in range(V)], atol=1e-12)


def test_collision_chance_and_likeliest_bound_by_enumeration():
    for S, V, L, hmm_seed, concentration in itertools.product((1, 2, 3), (2, 3), (1, 3, 5), range(2), (0.1, 1.0)):
        lang = language_of(S, V, concentration, hmm_seed)
        _, probs = every_sequence(lang, L)
        assert lang.collision_bits(L) == pytest.approx(-math.log2((probs ** 2).sum()), abs=1e-9)
        assert lang.collision_bits(L, enough=0.5) >= min(0.5, lang.collision_bits(L)) - 1e-12  # it stops early
        bound = lang.likeliest_bound_bits(L)
        assert -L * math.log2(lang.emission.max()) - 1e-9 <= bound <= -math.log2(probs.max()) + 1e-9


def test_an_impossible_sequence_has_no_likelihood_and_no_prediction_after_it():
    # State 0 emits 0 and may move to the absorbing state 1, which emits 1 or 2.
    lang = HMMLanguage(np.array([1.0, 0.0]), np.array([[0.5, 0.5], [0.0, 1.0]]),
                       np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]))
    assert lang.log_likelihood([0, 2]) == pytest.approx(math.log(0.25))
    assert lang.log_likelihood([0, 2, 0]) == -math.inf and lang.log_likelihood([1]) == -math.inf
    assert lang.surprisal_bits([0, 2, 0, 1]).tolist() == [0.0, 2.0, math.inf, math.inf]
    pred = lang.predictive([0, 2, 0])
    assert np.allclose(pred[:3], [[1, 0, 0], [0.5, 0.25, 0.25], [0, 0.5, 0.5]]) and np.isnan(pred[3]).all()
    for bad in ([0, 3], [-1]):
        with pytest.raises(ValueError, match="symbols must lie in 0..2"):
            lang.log_likelihood(bad)


def test_long_sequences_do_not_underflow():
    lang = language_of(8, 64, 0.5, 0)
    _, x = lang.sample(np.random.default_rng(0), 4096)
    ll = lang.log_likelihood(x)
    assert -1e5 < ll < -1000  # far below the smallest float64 as a probability
    assert ll == pytest.approx(log_forward(lang, x)[-1], rel=1e-10)


def pair_tv(draw_pair, truth: HMMLanguage, n: int) -> float:
    """Total variation between the empirical distribution of n pairs (x_1, x_2) from `draw_pair` and the
    exact one of `truth` (by its hidden paths)."""
    V = truth.emission.shape[1]
    counts = np.zeros((V, V))
    for _ in range(n):
        a, b = draw_pair()
        counts[a, b] += 1
    return 0.5 * np.abs(counts / n - exact_pairs(truth)).sum()


def exact_pairs(lang: HMMLanguage) -> np.ndarray:
    V = lang.emission.shape[1]
    return np.array([[by_paths(lang, (a, b)) for b in range(V)] for a in range(V)])


def test_the_sampler_draws_the_stated_distribution_and_the_check_would_catch_a_wrong_one():
    """n = 10,000 pairs over 16 cells: a right sampler's expected TV is at most 0.5 * sum_i sqrt(p_i / n) <=
    0.5 * sqrt(16 / n) = 0.02 (Cauchy-Schwarz), and one draw moves the TV by 1/n at most, so it exceeds 0.05 with
    chance at most exp(-2 n 0.03^2) < 2e-8 (McDiarmid). A wrong sampler whose pairs are 0.15 or more from the
    truth in TV comes within 0.05 of it only if its own empirical TV exceeds 0.1, as unlikely."""
    task = get_token_task("hmm", n_states=3, n_symbols=4, length=8, concentration=0.5, hmm_seed=2)
    lang = language(task.config)
    rng = np.random.default_rng(0)
    assert pair_tv(lambda: task.draw(rng).targets[:2], lang, 10_000) < 0.05
    flipped = lang.transition.T / lang.transition.T.sum(1, keepdims=True)  # the transition matrix transposed
    wrong = HMMLanguage(lang.initial, flipped, lang.emission)
    assert 0.5 * np.abs(exact_pairs(wrong) - exact_pairs(lang)).sum() > 0.15
    assert pair_tv(lambda: wrong.sample(rng, 2)[1], lang, 10_000) > 0.05


def test_entropy_rate_of_iid_symbols_is_the_emission_entropy():
    lang = language_of(1, 8, 0.7, 0)
    p = lang.emission[0]
    h, se = lang.entropy_rate_bits(20, 16, seed=0)
    assert h == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12) and se == pytest.approx(0, abs=1e-12)


def test_entropy_rate_of_a_markov_chain_seen_directly():
    # Each state emits its own symbol: H(x_{t+1} | x_1..x_t) = H(transition[x_t]), whose mean is
    # sum_s p(x_t = s) H(transition[s]) with p(x_t) = initial @ transition^(t - 1).
    T = language_of(5, 5, 0.5, 1).transition
    lang = HMMLanguage(np.full(5, 0.2), T, np.eye(5))
    L = 20
    row_entropy = -(T * np.log2(np.where(T > 0, T, 1))).sum(1)
    marginals = [np.full(5, 0.2) @ np.linalg.matrix_power(T, t - 1) for t in range(L // 2, L)]  # x_t, rows t
    want = float(np.mean([m @ row_entropy for m in marginals]))
    h, se = lang.entropy_rate_bits(400, L, seed=0)
    assert 0 < se < 0.05 and abs(h - want) < 4 * se


def test_entropy_rate_is_bounded_its_error_shrinks_and_it_matches_the_mean_surprisal():
    lang = language_of(6, 10, 0.3, 0)
    h1, se1 = lang.entropy_rate_bits(50, 40, seed=1)
    h2, se2 = lang.entropy_rate_bits(800, 40, seed=2)
    assert 0 < h1 < math.log2(10) and 0 < h2 < math.log2(10)
    assert 0 < se2 < se1 and abs(h1 - h2) < 4 * math.hypot(se1, se2)
    # The same sequences (the estimate's own draws) scored by the log-space recursion: the surprisal of x_{t+1} has
    # the conditional entropy of its prefix's prediction as its mean, so the two averages differ by noise alone.
    rng = np.random.default_rng(2)
    differences = []
    for _ in range(800):
        x = lang.sample(rng, 40)[1]
        surprisal = -np.diff(np.concatenate([[0.0], log_forward(lang, x)])) / math.log(2)
        pred = lang.predictive(x)[20:40]
        entropy = -(pred * np.log2(np.where(pred > 0, pred, 1))).sum(1)
        differences.append(surprisal[20:].mean() - entropy.mean())
    assert abs(np.mean(differences)) < 4 * np.std(differences) / math.sqrt(800)


def test_the_language_is_a_pure_function_of_its_knobs_and_not_of_the_example_seed():
    task = get_token_task("hmm", hmm_seed=3)
    lang = language(task.config)
    fresh = language_of.__wrapped__(8, 16, 0.2, 3)  # past the cache: drawn again
    for name in ("initial", "transition", "emission"):
        assert np.array_equal(getattr(lang, name), getattr(fresh, name))
    for other in (language_of(8, 16, 0.2, 4), language_of(8, 16, 0.3, 3)):
        assert not np.array_equal(lang.transition, other.transition)
        assert not np.array_equal(lang.emission, other.emission)
    assert np.allclose(lang.transition.sum(1), 1) and np.allclose(lang.emission.sum(1), 1)
    assert (lang.transition >= 0).all() and (lang.emission >= 0).all() and np.all(lang.initial == 1 / 8)
    before = lang.emission.copy()
    for seed in range(4):
        ex = task.example(seed, "train", 0)
        assert ex.meta["log_likelihood"] == pytest.approx(log_forward(fresh, list(ex.targets))[-1], rel=1e-9)
    assert np.array_equal(lang.emission, before) and language(task.config) is lang
    assert task.example(0, "train", 0) != task.example(1, "train", 0)  # another example seed, another sequence
    with pytest.raises(ValueError):
        lang.emission[0, 0] = 1.0  # shared by every task of the config: read-only


def test_the_defaults_are_exact_draws_of_the_hmm():
    # 98 bits of bound (the docstring's figure): both splits are independent streams, not restricted by a hash.
    task = get_token_task("hmm")
    assert 98 <= task.problem_bits() < 99
    assert task.example(4, "test", 9) == task.draw(task._rng(4, "test", 9))


def test_purity_and_a_small_language_split_by_sequence():
    check_purity("hmm", {"n_states": 4, "n_symbols": 8, "length": 16})
    task = get_token_task("hmm", n_symbols=2, length=16)  # 65536 sequences of a peaked language: split by hash
    assert task.problem_bits() < 64
    for seed in (0, 1):
        train = {task.example(seed, "train", i).targets for i in range(2000)}
        test = {task.example(seed, "test", i).targets for i in range(500)}
        assert len(train) > 100 and len(test) > 20 and not train & test


@pytest.mark.parametrize("L", range(6, 21))
def test_a_language_whose_sequences_often_coincide_is_refused(L):
    # One state: the symbols are i.i.d., and two sequences coincide with chance (sum_v p_v^2) ** L.
    p = language_of(1, 2, 5.0, 0).emission[0]
    bits = -L * math.log2((p ** 2).sum())
    if bits >= HASHED_SPLIT_BITS:
        get_token_task("hmm", n_states=1, n_symbols=2, length=L, concentration=5.0)
        return
    with pytest.raises(BadInput, match=f"too peaked to split .* chance 2\\^-{bits:.2f} ") as e:
        get_token_task("hmm", n_states=1, n_symbols=2, length=L, concentration=5.0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cfg, says", [
    ({"concentration": 0}, "task.concentration"), ({"concentration": float("inf")}, "task.concentration"),
    ({"concentration": float("nan")}, "task.concentration"), ({"n_symbols": 1}, "task.n_symbols"),
    ({"n_states": 0}, "task.n_states"), ({"length": 0}, "task.length"), ({"n_symbols": 5000}, "task.n_symbols"),
    ({"n_symbols": 2, "length": 5}, "only 32 distinct sequences, too few to split"),
    ({"n_states": 1, "n_symbols": 2, "length": 6, "concentration": 0.001}, "too peaked"),
    ({"n_sates": 3}, "did you mean 'task.n_states'"),
])
def test_bad_settings_are_refused_in_one_line(cfg, says):
    with pytest.raises(BadInput, match=says) as e:
        get_token_task("hmm", **cfg)
    assert "\n" not in str(e.value)
