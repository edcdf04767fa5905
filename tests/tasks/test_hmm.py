"""The hmm task: likelihoods and predictive distributions against brute-force sums over every hidden path and
every sequence, the sampler against the exact distribution, the token layout, the split and refusals."""

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.hmm import HMMLanguage, language
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


def by_paths(lang: HMMLanguage, symbols) -> float:
    """p(x) as the sum over every hidden path of p(path) p(x | path): the definition, with no recursion."""
    S = len(lang.initial)
    total = 0.0
    for path in itertools.product(range(S), repeat=len(symbols)):
        p = lang.initial[path[0]]
        for t, (s, x) in enumerate(zip(path, symbols)):
            if t:
                p *= lang.transition[path[t - 1], s]
            p *= lang.emission[s, x]
        total += p
    return total


def knobs(r: random.Random) -> dict:
    if r.random() < 0.1:
        return {}
    n_symbols = r.choice([2, 3, r.randint(2, 40)])
    least = math.ceil(math.log(64) / math.log(n_symbols))  # at least 64 sequences
    return {"n_states": r.choice([1, 2, 3, r.randint(1, 12)]), "n_symbols": n_symbols,
            "length": r.randint(least, least + r.choice([0, 3, 30])), "concentration": r.choice([0.05, 0.3, 1.0, 5.0]),
            "hmm_seed": r.randint(0, 5)}


@pytest.mark.slow
@settings(max_examples=2500, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_every_example_is_laid_out_and_scored_by_the_true_model(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    task = task_of("hmm", cfg)
    c, lang = task.config, language(task.config)
    try:
        ex = task.example(seed, split, i)
    except BadInput as e:  # a language so peaked that one split's sequences hold almost no probability
        assert "no " + split + " problem in" in str(e) and lang.emission.max() ** c.length > 0.1
        return
    scored = check_contract(task, ex)
    tokens, targets, states = list(ex.tokens), list(ex.targets), ex.meta["states"]
    assert scored == list(range(c.length)) and IGNORE not in targets and task.vocab_size == c.n_symbols + 1
    assert tokens[0] == c.n_symbols and tokens[1:] == targets[:-1] and ex.meta["answer"] == targets
    assert len(states) == c.length and all(0 <= s < c.n_states for s in states)
    assert all(lang.emission[s, x] > 0 for s, x in zip(states, targets))  # each symbol can come from its state
    assert all(lang.transition[a, b] > 0 for a, b in zip(states, states[1:]))
    if c.n_states ** min(c.length, 7) <= 3 ** 7 and c.length <= 7:
        want = math.log(by_paths(lang, targets))
    elif all(lang.emission[s, x] > 0 for s, x in zip(states, targets)):  # the plain recursion in log space, unnormalised: log-sum-exp over the previous states
        with np.errstate(divide="ignore"):
            log_a = np.log(lang.initial) + np.log(lang.emission[:, targets[0]])
        for x in targets[1:]:
            m = log_a.max()
            with np.errstate(divide="ignore"):
                log_a = m + np.log(np.exp(log_a - m) @ lang.transition) + np.log(lang.emission[:, x])
        want = float(log_a.max() + np.log(np.exp(log_a - log_a.max()).sum()))
    assert ex.meta["log_likelihood"] == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("S, V, L", [(1, 3, 3), (2, 2, 4), (3, 3, 3), (2, 3, 2)])
def test_tiny_languages_sum_to_one_and_predict_by_brute_force(S, V, L):
    for seed in range(3):
        lang = language(get_token_task("hmm", n_states=S, n_symbols=V, length=8, hmm_seed=seed, concentration=0.5).config)
        seqs = list(itertools.product(range(V), repeat=L))
        total = sum(math.exp(lang.log_likelihood(s)) for s in seqs)
        assert total == pytest.approx(1.0, abs=1e-12)
        for s in seqs[:: max(1, len(seqs) // 7)]:
            assert lang.log_likelihood(s) == pytest.approx(math.log(by_paths(lang, s)), abs=1e-12)
            pred = lang.predictive(s)
            assert pred.shape == (L + 1, V) and np.allclose(pred.sum(-1), 1)
            for t in range(L + 1):  # p(v | x_1..x_t) = p(x_1..x_t, v) / p(x_1..x_t)
                prefix = by_paths(lang, s[:t]) if t else 1.0
                want = [by_paths(lang, (*s[:t], v)) / prefix for v in range(V)]
                assert np.allclose(pred[t], want, atol=1e-12)
            assert lang.surprisal_bits(s).sum() == pytest.approx(-lang.log_likelihood(s) / math.log(2))


def pair_tv(sampler: HMMLanguage, truth: HMMLanguage, rng, n: int) -> float:
    """Total variation between the empirical distribution of (x_1, x_2) over n draws of `sampler` and the exact
    one of `truth`."""
    V = truth.emission.shape[1]
    counts = np.zeros((V, V))
    for _ in range(n):
        _, x = sampler.sample(rng, 2)
        counts[x[0], x[1]] += 1
    exact = np.array([[math.exp(truth.log_likelihood((a, b))) for b in range(V)] for a in range(V)])
    return 0.5 * np.abs(counts / n - exact).sum()


def test_the_sampler_draws_the_stated_distribution_and_the_check_would_catch_a_wrong_one():
    """4,000 draws over 16 pairs: a right sampler's expected TV is about 0.02, so 0.05 fails by chance almost
    never; a sampler with the transition matrix transposed (rows renormalised) lands far beyond it."""
    lang = language(get_token_task("hmm", n_states=3, n_symbols=4, length=8, concentration=0.5, hmm_seed=1).config)
    assert pair_tv(lang, lang, np.random.default_rng(0), 4000) < 0.05
    flipped = lang.transition.T / lang.transition.T.sum(1, keepdims=True)
    wrong = HMMLanguage(lang.initial, flipped, lang.emission)
    assert pair_tv(wrong, lang, np.random.default_rng(0), 4000) > 0.05


def test_entropy_rate_of_iid_symbols_is_the_emission_entropy():
    lang = language(get_token_task("hmm", n_states=1, n_symbols=8, length=4, concentration=0.7).config)
    p = lang.emission[0]
    h, se = lang.entropy_rate_bits(20, 16, seed=0)
    assert h == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-9) and se == pytest.approx(0, abs=1e-9)


@pytest.mark.slow
def test_entropy_rate_is_bounded_and_its_error_shrinks():
    lang = language(get_token_task("hmm", n_states=6, n_symbols=10, length=4, concentration=0.3).config)
    h1, se1 = lang.entropy_rate_bits(50, 40, seed=1)
    h2, se2 = lang.entropy_rate_bits(800, 40, seed=2)
    assert 0 < h1 < math.log2(10) and 0 < h2 < math.log2(10)
    assert se2 < se1 and abs(h1 - h2) < 4 * se1
    # sampled sequences' mean surprisal estimates the same rate (the Shannon-McMillan-Breiman theorem)
    rng = np.random.default_rng(3)
    surprisal = np.mean([lang.surprisal_bits(lang.sample(rng, 40)[1])[20:].mean() for _ in range(800)])
    assert abs(surprisal - h2) < 0.1


def test_the_language_is_its_knobs_and_not_the_example_seed():
    a = get_token_task("hmm", hmm_seed=3)
    b = get_token_task("hmm", hmm_seed=3)
    c = get_token_task("hmm", hmm_seed=4)
    la, lb, lc = language(a.config), language(b.config), language(c.config)
    assert np.array_equal(la.transition, lb.transition) and np.array_equal(la.emission, lb.emission)
    assert not np.array_equal(la.transition, lc.transition)
    assert np.allclose(la.transition.sum(1), 1) and np.allclose(la.emission.sum(1), 1)
    assert a.example(0, "train", 0) != a.example(1, "train", 0)  # another example seed, another sequence


@pytest.mark.slow
def test_purity_and_split():
    check_purity("hmm", {"n_symbols": 6, "length": 10})
    task = get_token_task("hmm", n_symbols=2, length=7, n_states=2)  # 128 sequences: both splits hashed by key
    train = {task.example(0, "train", i).targets for i in range(300)}
    test = {task.example(0, "test", i).targets for i in range(300)}
    assert train and test and not train & test


@pytest.mark.parametrize("cfg, says", [({"concentration": 0}, "concentration"), ({"n_symbols": 1}, "n_symbols"),
                                       ({"n_symbols": 2, "length": 5}, "only 32 distinct sequences"),
                                       ({"n_sates": 3}, "n_states")])
def test_bad_settings_are_refused_in_one_line(cfg, says):
    with pytest.raises(BadInput, match=says) as e:
        get_token_task("hmm", **cfg)
    assert "\n" not in str(e.value)
