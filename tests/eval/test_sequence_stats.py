"""distinct-n by hand, and teacher-forced surprise against the logits decoding saw."""

import math

import torch

from seqlab.eval.sequence_stats import distinct_ngrams, surprise_bits
from seqlab.models import ModelConfig, build


def test_distinct_ngrams_by_hand():
    assert distinct_ngrams([[1, 2, 3, 4, 5]], 4) == 1.0  # (1234), (2345)
    assert distinct_ngrams([[1, 2, 3, 4], [1, 2, 3, 4]], 4) == 0.5  # one 4-gram, twice
    assert distinct_ngrams([[7, 7, 7, 7, 7, 7]], 4) == 1 / 3  # three copies of (7777)
    assert distinct_ngrams([[1, 2], [3]], 2) == 1.0 and math.isnan(distinct_ngrams([[1, 2, 3]], 4))


def test_surprise_is_what_the_model_gave_each_token_as_it_was_written():
    """Greedy decoding with the cache, then surprise teacher-forced: each token's bits equal -log2 of the
    softmax of the logits at its step, computed here from one full pass per step without a cache."""
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=2, d_model=32, n_heads=2), 11).eval()
    prompt = torch.randint(0, 11, (3, 4))
    pos = torch.arange(4).expand(3, 4)
    base = torch.full((3,), 4)
    out = model.generate(prompt, pos, base, 5, eos=-1)
    bits = surprise_bits(model, prompt, pos, base, out, temperature=0.8)
    with torch.no_grad():
        for t in range(5):
            seq = torch.cat([prompt, out[:, :t]], 1)
            logits = model(seq, torch.arange(seq.shape[1]).expand(3, -1))[:, -1] / 0.8
            want = -logits.log_softmax(-1).gather(-1, out[:, t:t + 1])[:, 0] / math.log(2)
            assert torch.allclose(bits[:, t], want, atol=1e-5)
