"""The serving engine's greedy outputs are one-at-a-time greedy decoding, token for token, for every scheduler, every
mixer with a per-row cache, every position scheme, prompts of different lengths and requests that end early."""

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.serve.engine import ModelExecutor, poisson_arrivals, serve, summary
from seqlab.serve.schedulers import Continuous, MultiBin, Static
from seqlab.serve.slots import Request, SlotBatch
from tests.models.cached_mixers import CACHED_MIXERS

torch.set_num_threads(1)
VOCAB = 13
ROW_MIXERS = [kw for kw in CACHED_MIXERS if kw["mixers"] != "sliding_window"]
POSITIONS = [{"position": p} for p in ("none", "learned", "alibi", "coupling_relative")] + [
    {"position": "rope", "log_length_scale": True}]


def model(seed=0, **kw):
    torch.manual_seed(seed)
    # untied: tied, a random model's greedy output repeats its last token, which tests nothing
    m = build(ModelConfig(n_layers=2, d_model=32, n_heads=2, **{"tie_embeddings": False, **kw}), VOCAB).eval().double()
    with torch.no_grad():
        m.head.weight.mul_(10.0)  # sharp logits: near ties are rare, and the outputs vary
    return m


def requests(n=9, seed=0, rate=float("inf"), m=None):
    """Prompts of 2 to 6 tokens asking for 1 to 9; with a model, every other request's end token is one its greedy
    output writes half way, so some requests end early."""
    g = torch.Generator().manual_seed(seed)
    arrivals = poisson_arrivals(n, rate, seed)
    out = []
    for i in range(n):
        L = int(torch.randint(2, 7, (1,), generator=g))
        prompt = torch.randint(0, VOCAB - 1, (L,), generator=g).tolist()
        pos = torch.randint(0, 5, (L,), generator=g).tolist()  # the format's ids need not be 0, 1, 2, ...
        new = int(torch.randint(1, 10, (1,), generator=g))
        r = Request(i, prompt, pos, pos[-1] + 1, new, -1, arrival=arrivals[i], predicted=float(new))
        if m is not None and i % 2 == 0 and new > 1:
            r.eos = one_at_a_time(m, r)[new // 2]
        out.append(r)
    return out


def one_at_a_time(m, r: Request) -> list[int]:
    got = m.generate(torch.tensor([r.prompt]), torch.tensor([r.prompt_pos]), torch.tensor([r.pos_base]),
                     r.max_new_tokens, eos=r.eos)[0].tolist()
    return got[: got.index(r.eos) + 1] if r.eos in got else got


SCHEDULERS = [Static(3), MultiBin(3, [3.0, 6.0]), Continuous(3)]


@pytest.mark.parametrize("kw", ROW_MIXERS + POSITIONS, ids=lambda kw: ",".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_every_scheduler_gives_one_at_a_time_greedy_outputs(kw, scheduler):
    m = model(**kw)
    reqs = requests(m=m)
    done = serve(ModelExecutor(m, 3, 16), reqs, scheduler)
    assert sorted(c.id for c in done) == list(range(len(reqs)))
    ended_early = 0
    for c in done:
        want = one_at_a_time(m, reqs[c.id])
        assert c.tokens == want, f"request {c.id}"
        ended_early += len(want) < reqs[c.id].max_new_tokens
    assert ended_early, "no request ended on its end token: the test misses that case"


def test_requests_arriving_over_time_are_served_exactly_and_never_before_they_arrive():
    m = model()
    reqs = requests(n=12, seed=3, rate=200.0, m=m)
    done = serve(ModelExecutor(m, 4, 16), reqs, Continuous(4))
    for c in done:
        assert c.admitted >= c.arrival and c.finished > c.admitted
        assert c.tokens == one_at_a_time(m, reqs[c.id])
    s = summary(done)
    assert s["requests"] == 12 and s["latency_p95"] >= s["latency_mean"] * 0 and s["requests_per_s"] > 0


def test_static_batches_start_only_when_the_batch_before_is_done():
    m = model()
    done = serve(ModelExecutor(m, 3, 16), requests(n=9), Static(3))
    batches = sorted({c.admitted for c in done})
    assert len(batches) == 3
    for first, second in zip(batches, batches[1:]):
        assert all(c.finished <= second for c in done if c.admitted == first)


def test_multi_bin_batches_hold_requests_of_one_bin():
    m = model()
    sched = MultiBin(2, [4.0])
    reqs = requests(n=8, seed=1)
    done = serve(ModelExecutor(m, 2, 16), reqs, sched)
    by_start: dict[float, set] = {}
    for c in done:
        by_start.setdefault(c.admitted, set()).add(sched.bin_of(reqs[c.id]))
    full = [b for t, b in by_start.items() if sum(c.admitted == t for c in done) == 2]
    assert full and all(len(b) == 1 for b in full)


def test_continuous_batching_refills_a_slot_while_others_still_decode():
    m = model()
    done = serve(ModelExecutor(m, 2, 16), requests(n=6, seed=2), Continuous(2))
    assert any(a.admitted < b.admitted < a.finished for a in done for b in done)


def test_a_sliding_window_model_and_oversized_requests_are_refused_with_one_line():
    with pytest.raises(BadInput, match="rows at different lengths"):
        SlotBatch(model(mixers="sliding_window", sliding_window={"window": 3}), 2, 8)
    with pytest.raises(BadInput, match="a slot holds 8"):
        SlotBatch(model(), 2, 8).admit([(0, Request(0, [1, 2, 3], [0, 1, 2], 3, 6, -1))])
    with pytest.raises(BadInput, match="does not fit"):
        serve(ModelExecutor(model(), 2, 8), requests(n=2), Static(4))
    with pytest.raises(BadInput, match="no predicted length"):
        MultiBin(2, [3.0]).bin_of(Request(0, [1], [0], 1, 2, -1))
