"""The PCA control cache: attention without rebuilt keys equals densify-then-attend; full rank is exact."""

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.dictionary import pca_basis
from seqlab.models.kvcache.pca import PCACache


def fed(cache, g, prompt=9, steps=5):
    q, k, v = (torch.randn(2, 3, prompt, 16, generator=g) for _ in range(3))
    cache.attend(q, k, v)
    errors = []
    for _ in range(steps):
        q, k, v = (torch.randn(2, 3, 1, 16, generator=g) for _ in range(3))
        K, V = cache.dense()
        ours = cache.attend(q, k, v)
        keys, values = torch.cat([K, k], 2), torch.cat([V, v], 2)
        errors.append(float((ours - torch.softmax(q @ keys.transpose(-1, -2) / 4.0, -1) @ values).abs().max()))
    return max(errors)


def test_low_rank_attention_equals_densify_then_attend_and_counts_its_bytes():
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(500, 16, generator=g)
    basis = pca_basis(sample, 4)
    cache = PCACache(2, 3, 16, basis, basis, buffer=3)
    assert fed(cache, g) < 1e-5
    assert cache.c_k.shape[2] == 11 and cache.k_buf.shape[2] == 3
    assert cache.nbytes() == 2 * (2 * 3 * 11 * 4 * 2) + 2 * (2 * 3 * 3 * 16 * 2)
    assert cache.shared_nbytes() == 2 * (16 + 4 * 16) * 2


def test_a_full_rank_basis_keeps_every_vector():
    g = torch.Generator().manual_seed(1)
    basis = pca_basis(torch.randn(500, 16, generator=g), 16)
    cache = PCACache(1, 1, 16, basis, basis, buffer=0)
    k = torch.randn(1, 1, 6, 16, generator=g)
    cache.attend(k, k, k)
    assert torch.allclose(cache.dense()[0], k, atol=2e-2)  # 16-bit coefficients


def test_a_bad_basis_is_refused():
    with pytest.raises(BadInput, match="PCA basis"):
        PCACache(1, 1, 16, (torch.zeros(16), torch.zeros(4, 8)), (torch.zeros(16), torch.zeros(4, 16)))
