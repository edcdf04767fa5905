"""PPD's output is greedy decoding for every mixer, exit and k; its clock counts layer-steps as the schedule
says; exit heads trained on a frozen model match its greedy token more often than the logit lens."""

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from tests.models.cached_mixers import CACHED_MIXERS
from seqlab.serve.early_exit import all_exits, match_rates, train_exit_heads
from seqlab.serve.ppd import analytic_layer_steps, ppd_generate

torch.set_num_threads(1)
VOCAB = 11

MODELS = CACHED_MIXERS


def model(seed=0, n_layers=4, **kw):
    torch.manual_seed(seed)
    # untied: tied, a random model's greedy output repeats its last token, which tests nothing
    m = build(ModelConfig(n_layers=n_layers, d_model=32, n_heads=2, **{"tie_embeddings": False, **kw}), VOCAB).eval()
    with torch.no_grad():
        m.head.weight.mul_(10)
    return m


def prompt(seed, L=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (1, L), generator=g), torch.arange(L)[None], torch.tensor([L])


def schedule(model, p, pos, base, n, exit_layer, k):
    """The clock recomputed from greedy decoding and the exits' guesses read off one full pass."""
    out = model.generate(p, pos, base, n, eos=-1)
    seq = torch.cat([p, out], 1)
    ids = torch.cat([pos, base[:, None] + torch.arange(n)], 1)
    exits = all_exits(model, seq, ids)
    Lp, N = p.shape[1], len(model.blocks)
    start, matched = 0, 0
    for j in range(n - 2):  # out[j], read at index Lp + j, has its exit guess out[j + 1]; the last read launches nothing
        guess = exits[exit_layer - 1][0, Lp + j].topk(k).indices.tolist()
        hit = int(out[0, j + 1]) in guess
        matched += hit
        start += exit_layer if hit else N
    return out, start + N, matched


@pytest.mark.parametrize("kw", MODELS, ids=lambda kw: kw["mixers"])
@pytest.mark.parametrize("exit_layer, k", [(1, 1), (2, 3), (3, 11)])
def test_output_is_greedy_and_the_clock_follows_the_schedule(kw, exit_layer, k):
    m = model(**kw)
    for seed in range(2):
        p, pos, base = prompt(seed)
        want, critical, matched = schedule(m, p, pos, base, 10, exit_layer, k)
        got, stats = ppd_generate(m, p, pos, base, 10, eos=-1, exit_layer=exit_layer, top_k=k)
        assert torch.equal(got, want)
        assert stats.tokens == 9 and stats.matched == matched and stats.critical_path == critical
        assert stats.critical_path == pytest.approx(analytic_layer_steps(9, 4, exit_layer, stats.match_rate))
        wasted = (stats.tokens - 1) * k - matched
        assert stats.layer_computations == 9 * 4 + wasted * (4 - exit_layer)
    if k == VOCAB:  # every token is among all candidates: each token starts d layer-steps after the one before
        assert stats.matched == 8 and stats.critical_path == 8 * exit_layer + 4


def test_an_eos_ends_ppd_where_it_ends_greedy_decoding():
    m = model(3)
    p, pos, base = prompt(1)
    eos = int(m.generate(p, pos, base, 8, eos=-1)[0, 4])
    got, _ = ppd_generate(m, p, pos, base, 8, eos=eos, exit_layer=2, top_k=2)
    assert torch.equal(got, m.generate(p, pos, base, 8, eos=eos))


@pytest.mark.slow
def test_trained_exit_heads_match_more_often_than_the_logit_lens():
    """A random model whose blocks are scaled up, so that later blocks change its prediction (at the default
    scale the embedding dominates and every exit already agrees): the logit lens matches 0.29 and 0.51 after
    blocks 1 and 2, trained exits about 0.8 and 0.9."""
    m = model(5, n_layers=3)
    with torch.no_grad():
        for name, p in m.blocks.named_parameters():
            if name.endswith("proj.weight") or "mlp" in name:
                p.mul_(20)
    g = torch.Generator().manual_seed(0)

    def batches(step):
        tokens = torch.randint(0, VOCAB, (32, 12), generator=g)
        return tokens, torch.arange(12).expand(32, 12), torch.ones(32, 12, dtype=torch.bool)

    tokens, pos, mask = batches(0)
    lens = match_rates(m, tokens, pos, mask)
    heads = train_exit_heads(m, batches, steps=150, lr=3e-3)
    trained = match_rates(m, tokens, pos, mask, heads)
    assert lens[-1] == trained[-1] == 1.0  # the last exit is the model's own head
    assert lens[0] < 0.6 and trained[0] > lens[0] + 0.2 and trained[1] > lens[1] + 0.2
    assert all(p.requires_grad for p in m.parameters())  # the model is given back trainable
    out, stats = ppd_generate(m, *prompt(0), 8, eos=-1, exit_layer=2, heads=heads)
    assert torch.equal(out, m.generate(*prompt(0), 8, eos=-1))


def test_bad_settings_are_refused():
    m = model()
    p, pos, base = prompt(0)
    with pytest.raises(BadInput, match="exit_layer must lie in 1 .. 3"):
        ppd_generate(m, p, pos, base, 4, eos=0, exit_layer=4)
    with pytest.raises(BadInput, match="one prompt"):
        ppd_generate(m, p.repeat(2, 1), pos.repeat(2, 1), base.repeat(2), 4, eos=0, exit_layer=1)
