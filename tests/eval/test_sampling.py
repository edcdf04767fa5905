"""The sampler: repeatable draws, draws that follow the filtered distribution, Mirostat's feedback on surprise,
refused settings, and seqlab's filters against transformers' logits warpers on the same logits."""

import math

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.eval.sampling import LN2, MirostatV2, Sampler, next_token_picker, sampler_from

NO_CONTEXT = torch.zeros(1, 0, dtype=torch.long)


def zipf_logits(vocab: int, s: float = 1.1) -> torch.Tensor:
    return -s * torch.log(torch.arange(1, vocab + 1, dtype=torch.float))


def test_greedy_is_none_and_a_filter_at_temperature_0_is_refused():
    assert next_token_picker() is None
    with pytest.raises(BadInput, match="typical has no effect at temperature 0"):
        next_token_picker(typical=0.9)
    with pytest.raises(BadInput, match="sampling.typicall"):  # an unknown knob names itself and the nearest one
        next_token_picker(temperature=1.0, typicall=0.9)
    with pytest.raises(BadInput, match="sampling.top_p"):
        next_token_picker(temperature=1.0, top_p=1.5)


def test_the_same_seed_gives_the_same_draws_and_another_seed_others():
    logits = zipf_logits(100).expand(256, 100)
    ctx = torch.zeros(256, 0, dtype=torch.long)
    a, b, c = (next_token_picker(temperature=1.0, seed=s) for s in (3, 3, 4))
    first = a(logits, ctx)
    assert torch.equal(first, b(logits, ctx)) and not torch.equal(first, c(logits, ctx))


def test_draws_follow_the_filtered_distribution():
    """200,000 draws from top-p 0.8 of a Zipf row: the empirical distribution is within 0.01 total variation of
    the renormalised kept probabilities (the expected TV of that many draws over ~10 tokens is about 0.003)."""
    pick = next_token_picker(temperature=1.0, top_p=0.8, seed=0)
    logits = zipf_logits(40).expand(200_000, 40)
    ids = pick(logits, torch.zeros(200_000, 0, dtype=torch.long))
    probs = logits[0].softmax(-1)
    before = probs.cumsum(-1) - probs
    want = torch.where(before < 0.8, probs, torch.zeros_like(probs))
    want = want / want.sum()
    seen = torch.bincount(ids, minlength=40).float() / len(ids)
    assert 0.5 * (seen - want).abs().sum() < 0.01
    assert seen[want == 0].sum() == 0  # nothing outside the nucleus, ever


def test_top_k_1_is_argmax_at_any_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 30, generator=g)
    pick = next_token_picker(temperature=5.0, top_k=1, seed=1)
    assert torch.equal(pick(logits, torch.zeros(50, 0, dtype=torch.long)), logits.argmax(-1))


@pytest.mark.parametrize("tau", [3.5, 5.0])
def test_mirostat_holds_the_mean_surprise_at_its_target(tau):
    """On a fixed Zipf distribution over 1,000 tokens (entropy about 6.5 bits), 256 rows of 400 steps: the mean
    surprise of the drawn tokens over the last 300 steps is within 0.1 bits of tau, while plain sampling's is
    the entropy, far from both targets. (The likeliest token's surprise is 2.5 bits: no lower target is reachable.)"""
    V, B = 1000, 256
    logits = zipf_logits(V).expand(B, V)
    probs_bits = -logits.log_softmax(-1)[0] / LN2
    entropy_bits = float((logits.softmax(-1)[0] * probs_bits).sum())
    sampler = Sampler([], seed=0, mirostat=MirostatV2(tau, eta=0.1))
    sampler.begin(B)
    ctx = torch.zeros(B, 0, dtype=torch.long)
    surprises = [probs_bits[sampler(logits, ctx)] for _ in range(400)]
    mean = float(torch.stack(surprises[100:]).mean())
    assert abs(mean - tau) < 0.1, (mean, tau)
    assert abs(entropy_bits - tau) > 1
    plain = next_token_picker(temperature=1.0, seed=0)
    assert abs(float(probs_bits[plain(logits, ctx)].mean()) - entropy_bits) < 0.2


def test_mirostat_starts_afresh_for_every_batch():
    """After 200 steps mu has settled (about 4.7 for tau = 3 here); begin() puts it back at 2 tau = 6, so one
    step later it is 6 - 0.1 (s - 3) for a drawn surprise s of at most 6 bits: at least 5.7."""
    logits = zipf_logits(200).expand(8, 200)
    ctx = torch.zeros(8, 0, dtype=torch.long)
    s = next_token_picker(temperature=1.0, mirostat_tau=3.0, seed=0)
    s.begin(8)
    for _ in range(200):
        s(logits, ctx)
    assert s.mirostat.mu.shape == (8, 1) and float(s.mirostat.mu.mean()) < 5.2
    s.begin(8)
    s(logits, ctx)
    assert (s.mirostat.mu >= 5.7 - 1e-6).all()


def test_penalties_see_the_prompt_and_the_generated_tokens():
    """With a huge repetition penalty a token in the context is never drawn again."""
    pick = next_token_picker(temperature=1.0, repetition_penalty=1e6, seed=0)
    logits = torch.full((4, 5), 30.0)  # all positive: the penalty divides them to 3e-5, e^-30 as likely as the others
    ctx = torch.tensor([[0, 1], [2, 3], [4, 4], [0, 0]])
    for _ in range(50):
        ids = pick(logits, ctx)
        assert not (ids[:, None] == ctx).any()


def test_config_knobs_build_their_processors_in_order():
    s = sampler_from({"temperature": 0.5, "top_k": 5, "typical": 0.9, "repetition_penalty": 1.2})
    assert [type(p).__name__ for p in s.processors] == ["RepetitionPenalty", "Temperature", "TopK", "Typical"]


HF_CASES = [("typical", 0.9, "TypicalLogitsWarper", {"mass": 0.9}),
            ("typical", 0.35, "TypicalLogitsWarper", {"mass": 0.35}),
            ("epsilon", 0.02, "EpsilonLogitsWarper", {"epsilon": 0.02}),
            ("eta", 0.01, "EtaLogitsWarper", {"epsilon": 0.01}),
            ("eta", 0.2, "EtaLogitsWarper", {"epsilon": 0.2}),
            ("min_p", 0.1, "MinPLogitsWarper", {"min_p": 0.1}),
            ("top_p", 0.7, "TopPLogitsWarper", {"top_p": 0.7}),
            ("top_k", 7, "TopKLogitsWarper", {"top_k": 7})]


@pytest.mark.parametrize("knob, value, warper, kwargs", HF_CASES, ids=lambda c: str(c))
def test_filters_match_transformers(knob, value, warper, kwargs):
    lp = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(128, 200, generator=g) * torch.linspace(0.2, 6, 128)[:, None]
    ours = sampler_from({"temperature": 1.0, knob: value}).filtered(logits, torch.zeros(128, 0, dtype=torch.long))
    theirs = getattr(lp, warper)(**kwargs)(torch.zeros(128, 1, dtype=torch.long), logits.clone())
    assert torch.equal(ours.isfinite(), theirs.isfinite())
    assert torch.equal(ours[ours.isfinite()], theirs[theirs.isfinite()])


def test_repetition_penalty_matches_transformers():
    lp = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(16, 50, generator=g) * 3
    ctx = torch.randint(0, 50, (16, 12), generator=g)
    ours = sampler_from({"temperature": 1.0, "repetition_penalty": 1.3}).filtered(logits, ctx)
    theirs = lp.RepetitionPenaltyLogitsProcessor(1.3)(ctx, logits.clone())
    assert torch.allclose(ours, theirs)
    assert math.isclose(float((ours != logits).sum()), float((theirs != logits).sum()))
