"""Each logits processor on hand-made distributions whose kept sets are worked out in the comments, and the
invariants every filter keeps on random logits (a kept token in every row, kept logits unchanged)."""

import math

import pytest
import torch

from seqlab.eval.logits_processors import (Epsilon, Eta, FrequencyPresencePenalty, MinP, RepetitionPenalty, Temperature,
                                           TopK, TopP, Typical)

# p = 0.5, 0.3, 0.15, 0.05. Entropy H = 1.1423 nats; surprises -ln p = 0.693, 1.204, 1.897, 2.996, so the
# distances |-ln p - H| are 0.449, 0.062, 0.755, 1.854 and the typical order is token 1, 0, 2, 3.
PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBS.log()
NO_CONTEXT = torch.zeros(1, 0, dtype=torch.long)


def kept(proc, logits=LOGITS, context=NO_CONTEXT) -> set[int]:
    out = proc(logits, context)
    return {i for i, z in enumerate(out[0].tolist()) if z != float("-inf")}


@pytest.mark.parametrize("proc, expected", [
    (TopK(1), {0}), (TopK(2), {0, 1}), (TopK(4), {0, 1, 2, 3}), (TopK(9), {0, 1, 2, 3}),
    (TopP(0.45), {0}),  # 0.5 alone reaches 0.45 (thresholds stay off the exact sums: float rounding)
    (TopP(0.7), {0, 1}), (TopP(0.81), {0, 1, 2}), (TopP(1.0), {0, 1, 2, 3}),
    (MinP(0.5), {0, 1}),  # 0.5 * 0.5 = 0.25: 0.15 is below it
    (MinP(0.25), {0, 1, 2}),  # threshold 0.125
    (MinP(1.0), {0}),
    (Epsilon(0.2), {0, 1}), (Epsilon(0.1), {0, 1, 2}), (Epsilon(0.6), {0}),  # the top token always stays
    # eta = min(eps, sqrt(eps) exp(-H)), exp(-H) = 0.3190: eps 0.1 -> min(0.1, 0.1009) = 0.1; eps 0.3 -> 0.1747.
    (Eta(0.1), {0, 1, 2}), (Eta(0.3), {0, 1}),
    (Typical(0.25), {1}),  # the most typical token alone (0.3) reaches 0.25 (and the likeliest is dropped)
    (Typical(0.7), {0, 1}),  # 0.3 + 0.5 = 0.8 reaches 0.7
    (Typical(0.85), {0, 1, 2}), (Typical(1.0), {0, 1, 2, 3}),
])
def test_kept_sets_by_hand(proc, expected):
    assert kept(proc) == expected


def test_kept_logits_are_unchanged_and_others_minus_inf():
    out = TopP(0.7)(LOGITS, NO_CONTEXT)
    assert torch.equal(out[0, :2], LOGITS[0, :2]) and out[0, 2:].eq(float("-inf")).all()


def test_temperature_divides():
    assert torch.allclose(Temperature(2.0)(LOGITS, NO_CONTEXT), LOGITS / 2)


def test_repetition_penalty_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    context = torch.tensor([[0, 1, 1]])
    out = RepetitionPenalty(2.0)(logits, context)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]  # positive halves, negative doubles, unseen tokens stay


def test_frequency_and_presence_penalties_by_hand():
    logits = torch.zeros(1, 4)
    context = torch.tensor([[0, 0, 2, 0]])
    out = FrequencyPresencePenalty(frequency=0.5, presence=1.0)(logits, context)
    assert out.tolist() == [[-(3 * 0.5 + 1), 0.0, -(0.5 + 1), 0.0]]


def test_penalties_read_each_row_of_the_context():
    logits = torch.ones(2, 3)
    out = RepetitionPenalty(4.0)(logits, torch.tensor([[0, 0], [2, 1]]))
    assert out.tolist() == [[0.25, 1, 1], [1, 0.25, 0.25]]


FILTERS = [TopK(3), TopP(0.6), MinP(0.2), Typical(0.5), Epsilon(0.05), Eta(0.05)]


@pytest.mark.parametrize("proc", FILTERS, ids=lambda p: type(p).__name__)
def test_every_row_keeps_a_token_and_the_kept_logits(proc):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g) * torch.rand(64, 1, generator=g) * 6  # peaked and flat rows
    logits[0] = 0.0  # a uniform row
    out = proc(logits, torch.zeros(64, 0, dtype=torch.long))
    finite = out.isfinite()
    assert finite.any(-1).all()
    assert torch.equal(out[finite], logits[finite])


@pytest.mark.parametrize("proc", [TopP(0.6), MinP(0.2), Epsilon(0.05), Eta(0.05), TopK(3)], ids=lambda p: type(p).__name__)
def test_a_kept_token_is_at_least_as_likely_as_any_dropped_one(proc):
    """The filters other than typical keep a top slice of the distribution."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 40, generator=g) * 3
    out = proc(logits, torch.zeros(32, 0, dtype=torch.long))
    for row, filtered in zip(logits, out):
        keep = filtered.isfinite()
        if (~keep).any():
            assert row[keep].min() >= row[~keep].max()


def test_entropy_of_rows_with_minus_inf_logits():
    """A filter applied after another sees -inf logits: eta's entropy must ignore them, not turn into nan."""
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]])  # H = ln 2
    out = Eta(0.3)(logits, NO_CONTEXT)  # eta = min(0.3, sqrt(0.3) / 2) = 0.274 < 0.5: both stay
    assert out[0, :2].tolist() == [0.0, 0.0] and math.isinf(out[0, 2])


def test_banned_tokens_are_never_kept():
    from seqlab.eval.logits_processors import Banned
    out = Banned((0, 2))(LOGITS, NO_CONTEXT)
    assert kept(lambda z, c: out) == {1, 3} and torch.equal(out[0, [1, 3]], LOGITS[0, [1, 3]])
