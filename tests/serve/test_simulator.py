"""The simulator reproduces the paper's closed forms under its service model, makes the same batches as the real
engine, and its fitted service model recovers known coefficients; the length predictors do what they say."""

import numpy as np
import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.serve.engine import ModelExecutor, serve, summary
from seqlab.serve.length_predictors import Learned, Noisy, Oracle
from seqlab.serve.schedulers import Continuous, MultiBin, Static, equal_mass, equal_width
from seqlab.serve.simulator import (
    ServiceModel, SimulatedExecutor, measure_service, multi_bin_throughput, one_bin_batch_time,
)
from seqlab.serve.slots import Request

torch.set_num_threads(1)


def uniform_requests(n, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    return [Request(i, [1], [0], 1, hi, -1, true_length=int(rng.integers(lo, hi + 1))) for i in range(n)]


@pytest.mark.parametrize("B", [4, 16])
def test_one_bin_batch_time_is_the_closed_form(B):
    lo, hi = 100, 1000  # wide, so that integer lengths are close to the closed form's continuous ones
    reqs = uniform_requests(250 * B, lo, hi)
    done = serve(SimulatedExecutor(ServiceModel.constant(), B), reqs, Static(B))
    mean_batch = max(c.finished for c in done) / (len(reqs) / B)
    assert mean_batch == pytest.approx(one_bin_batch_time(lo, hi, B), rel=0.02)


@pytest.mark.parametrize("k", [2, 4])
def test_multi_bin_throughput_is_the_closed_form_and_beats_one_bin(k):
    lo, hi, B = 100, 1000, 8
    reqs = uniform_requests(3000, lo, hi, seed=k)
    Oracle().predict(reqs)
    done = serve(SimulatedExecutor(ServiceModel.constant(), B), reqs, MultiBin(B, equal_width(lo, hi + 1, k)))
    got = summary(done)["requests_per_s"]
    assert got == pytest.approx(multi_bin_throughput(lo, hi, B, k), rel=0.03)
    assert got > multi_bin_throughput(lo, hi, B, 1) * 1.1


def test_continuous_batching_keeps_every_slot_busy_under_the_papers_model():
    lo, hi, B = 10, 100, 8
    reqs = uniform_requests(800, lo, hi)
    done = serve(SimulatedExecutor(ServiceModel.constant(), B), reqs, Continuous(B))
    # Every step writes B tokens while the queue lasts: the makespan is about sum(l) / B steps.
    assert max(c.finished for c in done) == pytest.approx(sum(r.true_length for r in reqs) / B, rel=0.02)


def small_model(**kw):
    torch.manual_seed(0)
    # untied: tied, a random model's greedy output repeats its last token, which tests nothing
    m = build(ModelConfig(n_layers=1, d_model=32, n_heads=2, **{"tie_embeddings": False, **kw}), 11).eval().double()
    with torch.no_grad():
        m.head.weight.mul_(10.0)
    return m


@pytest.mark.parametrize("scheduler", [Static(3), MultiBin(3, [4.0]), Continuous(3)], ids=lambda s: s.name)
def test_the_simulator_serves_the_real_engines_tokens_in_the_same_batches(scheduler):
    m = small_model()
    g = torch.Generator().manual_seed(5)
    reqs = [Request(i, torch.randint(0, 10, (3,), generator=g).tolist(), [0, 1, 2], 3, int(n), 10)
            for i, n in enumerate(torch.randint(1, 9, (10,), generator=g))]
    real = serve(ModelExecutor(m, 10, 12), reqs, Static(10))  # one batch: each request's true greedy length
    for c in real:
        reqs[c.id].true_length = c.n_tokens
    Oracle().predict(reqs)
    sim = serve(SimulatedExecutor(ServiceModel.constant(), 3), reqs, scheduler)
    eng = serve(ModelExecutor(m, 3, 12), reqs, scheduler)

    def batches(done):  # which requests were admitted together, and how many tokens each wrote
        groups: dict[float, list] = {}
        for c in done:
            groups.setdefault(c.admitted, []).append((c.id, c.n_tokens))
        return sorted(sorted(g) for g in groups.values())

    if not isinstance(scheduler, Continuous):  # continuous admissions follow finishing times, which differ
        assert batches(sim) == batches(eng)
    assert sorted((c.id, c.n_tokens) for c in sim) == sorted((c.id, c.n_tokens) for c in eng)


def test_the_service_fit_recovers_known_coefficients_and_a_real_fit_is_close():
    true = ServiceModel(1e-3, 2e-4, 3e-6, 5e-4, 1e-5)
    steps = [(b, t, true.step(b, t)) for b in (1, 4, 16) for t in (8, 64)]
    prefills = [(n, L, true.prefill(n, L)) for n in (1, 4, 16) for L in (8, 64)]
    fit = ServiceModel.fit(steps, prefills)
    for name in ("s0", "s1", "s2", "p0", "p1"):
        assert getattr(fit, name) == pytest.approx(getattr(true, name), rel=1e-6)
    m = small_model()
    steps, prefills = measure_service(m.float(), [1, 4], [4, 16], eos=10, vocab=10, reps=3)
    assert len(steps) == 4 and all(sec > 0 for *_, sec in steps + prefills)
    errs = ServiceModel.fit(steps, prefills).relative_errors(steps, prefills)
    assert set(errs) == {"step_mean", "step_max", "prefill_mean", "prefill_max"}


def test_predictors():
    reqs = uniform_requests(200, 5, 50)
    Oracle().predict(reqs)
    assert all(r.predicted == r.true_length for r in reqs)
    Noisy(0.0).predict(reqs)
    assert all(r.predicted == r.true_length for r in reqs)
    Noisy(0.5, seed=1).predict(reqs)
    ratios = np.log([r.predicted / r.true_length for r in reqs])
    assert abs(ratios.mean()) < 0.15 and ratios.std() == pytest.approx(0.5, rel=0.2)
    with pytest.raises(BadInput, match="no true length"):
        Oracle().predict([Request(0, [1], [0], 1, 4, -1)])
    assert equal_width(0, 8, 4) == [2, 4, 6] and equal_mass(list(range(100)), 4) == [25, 50, 75]


def test_the_learned_predictor_reads_a_length_the_prompt_sets():
    """With learned positions, the last prompt token's state carries the prompt's length: requests whose output
    length is twice it are predicted closely on requests it did not see."""
    m = small_model(position="learned")
    rng = np.random.default_rng(0)

    def reqs(n, offset):
        out = []
        for i in range(n):
            L = int(rng.integers(2, 20))
            out.append(Request(offset + i, rng.integers(0, 10, L).tolist(), list(range(L)), L, 64, -1, true_length=2 * L))
        return out

    train, test = reqs(120, 0), reqs(40, 1000)
    p = Learned(m)
    assert p.fit(train)["train_relative_error"] < 0.1
    p.predict(test)
    assert np.mean([abs(r.predicted / r.true_length - 1) for r in test]) < 0.15
