"""Speculative decoding is greedy decoding of the target, for every mixer, draft and gamma; its counts add up."""

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from tests.models.cached_mixers import CACHED_MIXERS
from seqlab.serve.speculative import speculative_generate

torch.set_num_threads(1)
VOCAB = 13

TARGETS = CACHED_MIXERS


def model(seed, n_layers=2, sharpen=10.0, **kw):
    torch.manual_seed(seed)
    # untied: tied, a random model's greedy output repeats its last token, which tests nothing
    m = build(ModelConfig(n_layers=n_layers, d_model=32, n_heads=2, **{"tie_embeddings": False, **kw}), VOCAB).eval()
    with torch.no_grad():
        m.head.weight.mul_(sharpen)
    return m


def prompt(seed, L=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (1, L), generator=g), torch.arange(L)[None], torch.tensor([L])


@pytest.mark.parametrize("kw", TARGETS, ids=lambda kw: kw["mixers"])
@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_the_output_is_the_targets_greedy_decoding(kw, gamma):
    target = model(0, **kw)
    draft = model(1, n_layers=1)  # another, smaller random model: most proposals are rejected
    for seed in range(3):
        p, pos, base = prompt(seed)
        want = target.generate(p, pos, base, 12, eos=VOCAB - 1)
        got, stats = speculative_generate(target, draft, p, pos, base, 12, eos=VOCAB - 1, gamma=gamma)
        assert torch.equal(got, want)
        assert 0 <= stats.accepted <= stats.proposed


@pytest.mark.parametrize("kw", TARGETS[:2], ids=lambda kw: kw["mixers"])
def test_the_target_as_its_own_draft_accepts_everything(kw):
    """Every proposal is the target's own greedy token: all accepted, and each pass writes gamma + 1 tokens, so
    12 tokens take the prefill (1 token) and three passes (5, 5, then 1 of 2); no eos: it is out of the vocabulary."""
    target = model(0, **kw)
    p, pos, base = prompt(0)
    got, stats = speculative_generate(target, target, p, pos, base, 12, eos=-1, gamma=4)
    assert torch.equal(got, target.generate(p, pos, base, 12, eos=-1))
    assert stats.accepted == stats.proposed == 4 + 4 + 1
    assert stats.target_passes == 1 + 3


def test_an_eos_ends_the_output_as_greedy_decoding_does():
    target = model(2, tie_embeddings=False)  # tied, a random model repeats its last token: the end would come first
    p, pos, base = prompt(4)
    free = target.generate(p, pos, base, 10, eos=-1)[0].tolist()
    eos = free[3]  # a token the target writes at step 3 (or earlier): it ends greedy decoding there
    want = target.generate(p, pos, base, 10, eos=eos)
    got, _ = speculative_generate(target, model(3, n_layers=1), p, pos, base, 10, eos=eos, gamma=3)
    assert torch.equal(got, want) and got[0, -1] == eos


def test_bad_settings_are_refused():
    target = model(0)
    p, pos, base = prompt(0)
    with pytest.raises(BadInput, match="one prompt"):
        speculative_generate(target, target, p.repeat(2, 1), pos.repeat(2, 1), base.repeat(2), 4, eos=0)
    with pytest.raises(BadInput, match="gamma"):
        speculative_generate(target, target, p, pos, base, 4, eos=0, gamma=0)
    torch.manual_seed(0)
    other = build(ModelConfig(n_layers=1, d_model=32, n_heads=2), VOCAB + 1)
    with pytest.raises(BadInput, match="vocabulary"):
        speculative_generate(target, other, p, pos, base, 4, eos=0)


@pytest.mark.parametrize("kw", TARGETS, ids=lambda kw: kw["mixers"])
@pytest.mark.parametrize("exit_layer, gamma", [(1, 2), (2, 4)])
def test_self_speculation_through_an_early_exit_is_greedy_decoding(kw, exit_layer, gamma):
    from seqlab.serve.self_speculative import EarlyExitDraft, layer_steps, self_speculative_generate

    target = model(0, n_layers=3, **kw)
    for seed in range(3):
        p, pos, base = prompt(seed)
        got, stats = self_speculative_generate(target, p, pos, base, 12, eos=VOCAB - 1, exit_layer=exit_layer, gamma=gamma)
        assert torch.equal(got, target.generate(p, pos, base, 12, eos=VOCAB - 1))
        clock = layer_steps(stats, 3, exit_layer)
        assert clock["critical_path"] == 3 * stats.target_passes + exit_layer * stats.draft_passes
    with pytest.raises(BadInput, match="exit_layer"):
        EarlyExitDraft(target, 3)


def test_the_early_exit_draft_is_the_logit_lens_of_its_blocks():
    from seqlab.serve.early_exit import all_exits
    from seqlab.serve.self_speculative import EarlyExitDraft

    target = model(0, n_layers=3)
    p, pos, _ = prompt(1)
    assert torch.allclose(EarlyExitDraft(target, 2)(p, pos), all_exits(target, p, pos)[1], atol=1e-6)


def test_an_accepted_end_token_stops_without_rereading():
    """The target as its own draft, the end token among the proposals: one scoring pass after the prefill, no reread."""
    target = model(2, tie_embeddings=False)
    p, pos, base = prompt(4)
    free = target.generate(p, pos, base, 10, eos=-1)[0].tolist()
    i = next(i for i in range(2, 10) if free[i] not in free[:i])  # a token first written at step i >= 2
    got, stats = speculative_generate(target, target, p, pos, base, 10, eos=free[i], gamma=9)
    assert torch.equal(got, target.generate(p, pos, base, 10, eos=free[i]))
    assert stats.target_passes == 2 and stats.accepted == i
