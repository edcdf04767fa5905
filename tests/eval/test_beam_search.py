"""Beam search against an exhaustive search, greedy decoding and its own uncached reference, on small random
decoders of every mixer; diverse beam search's groups on a case worked out by hand."""

import itertools

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.eval.beam_search import beam_search
from seqlab.models import ModelConfig, build
from tests.models.cached_mixers import CACHED_MIXERS

torch.set_num_threads(1)
VOCAB = 7
EOS = 6

MIXERS = CACHED_MIXERS


def small(seed=0, **kw):
    torch.manual_seed(seed)
    # untied: tied, a random model's greedy output repeats its last token, which tests nothing
    model = build(ModelConfig(n_layers=2, d_model=32, n_heads=2, **{"tie_embeddings": False, **kw}), VOCAB).eval()
    with torch.no_grad():  # sharpen the random model so that beams differ clearly
        model.head.weight.mul_(40)
    return model


def prompts(B=3, L=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, EOS, (B, L), generator=g)
    pos = torch.arange(L).expand(B, L)
    return tokens, pos, torch.full((B,), L)


@torch.no_grad()
def teacher_forced_logprob(model, prompt, pos, base, continuation) -> float:
    """log p(continuation | prompt) by one full pass (natural log)."""
    n = len(continuation)
    tokens = torch.cat([prompt, torch.tensor(continuation)])[None]
    ids = torch.cat([pos, base + torch.arange(n)])[None]
    logp = model(tokens, ids)[0].float().log_softmax(-1)
    Lp = len(prompt)
    return float(sum(logp[Lp - 1 + i, t] for i, t in enumerate(continuation)))


@pytest.mark.parametrize("kw", MIXERS, ids=lambda kw: kw["mixers"])
def test_the_cached_path_equals_the_uncached_reference(kw):
    model = small(**kw)
    p, pos, base = prompts()
    for groups, diversity in ((1, 0.0), (2, 0.7)):
        a = beam_search(model, p, pos, base, 6, EOS, n_beams=4, n_groups=groups, diversity=diversity)
        b = beam_search(model, p, pos, base, 6, EOS, n_beams=4, n_groups=groups, diversity=diversity, use_cache=False)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.length, b.length)
        assert torch.allclose(a.score, b.score, atol=1e-4) and torch.allclose(a.logprob, b.logprob, atol=1e-4)


@pytest.mark.parametrize("kw", MIXERS[:2], ids=lambda kw: kw["mixers"])
def test_one_beam_is_greedy_decoding(kw):
    model = small(**kw)
    p, pos, base = prompts(B=5)
    beams = beam_search(model, p, pos, base, 8, EOS, n_beams=1, length_penalty=0.0)
    greedy = model.generate(p, pos, base, 8, EOS)
    assert torch.equal(beams.tokens[:, 0], greedy)
    assert (greedy[:, 1:] != greedy[:, :1]).any(), "every output repeats one token: the test sees no decoding"


def test_logprob_is_the_models_probability_of_the_returned_sequence():
    model = small()
    p, pos, base = prompts(B=2)
    beams = beam_search(model, p, pos, base, 5, EOS, n_beams=3, n_groups=3, diversity=2.0)
    for b in range(2):
        for k in range(3):
            seq = beams.tokens[b, k, :beams.length[b, k]].tolist()
            assert abs(float(beams.logprob[b, k]) - teacher_forced_logprob(model, p[b], pos[b], base[b], seq)) < 1e-4


def test_enough_beams_find_the_likeliest_sequence_of_all():
    """With beams for every prefix (V^(T-1) = 49 for T = 3) beam search is exact: with length_penalty 0 its best
    sequence is the likeliest of all sequences of at most 3 tokens that end at the first eos, by enumeration."""
    for seed in range(3):
        model = small(seed=seed)
        p, pos, base = prompts(B=1, seed=seed)
        beams = beam_search(model, p, pos, base, 3, EOS, n_beams=VOCAB ** 2, length_penalty=0.0)
        seqs = []
        for n in (1, 2, 3):
            for s in itertools.product(range(VOCAB), repeat=n):
                if EOS not in s[:-1] and (n == 3 or s[-1] == EOS):
                    seqs.append(list(s))
        scored = [(teacher_forced_logprob(model, p[0], pos[0], base[0], s), s) for s in seqs]
        best_lp, best = max(scored)
        top = int(beams.score.argmax())
        assert beams.tokens[0, top, :beams.length[0, top]].tolist() == best
        assert abs(float(beams.score[0, top]) - best_lp) < 1e-4
        # and the returned beams are the 49 likeliest sequences, in order
        want = sorted((lp for lp, _ in scored), reverse=True)[:VOCAB ** 2]
        assert torch.allclose(beams.score[0].sort(descending=True).values, torch.tensor(want), atol=1e-4)


def test_a_large_diversity_penalty_sends_groups_to_different_first_tokens():
    """With diversity 1e3 a group never repeats a token an earlier group chose at the same step, so the four
    groups' first tokens are distinct; without it every group follows the same beam."""
    model = small()
    p, pos, base = prompts(B=2)
    diverse = beam_search(model, p, pos, base, 4, EOS, n_beams=4, n_groups=4, diversity=1e3)
    same = beam_search(model, p, pos, base, 4, EOS, n_beams=4, n_groups=4, diversity=0.0)
    for b in range(2):
        assert len(set(diverse.tokens[b, :, 0].tolist())) == 4
        assert len({tuple(r) for r in same.tokens[b].tolist()}) == 1
    # the diverse beams' log-probabilities are no higher than plain beam search's best
    assert (diverse.logprob.max(-1).values <= same.logprob.max(-1).values + 1e-5).all()


@pytest.mark.parametrize("kw, match", [({"n_beams": 3, "n_groups": 2}, "multiple of n_groups"),
                                       ({"diversity": -1.0}, "diversity"), ({"n_beams": 0}, "multiple")])
def test_bad_settings_are_refused(kw, match):
    model = small()
    p, pos, base = prompts()
    with pytest.raises(BadInput, match=match):
        beam_search(model, p, pos, base, 4, EOS, **kw)
