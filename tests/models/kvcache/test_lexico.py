"""Lexico: batched OMP against a plain loop and scikit-learn, the sparse attention against densify-then-attend,
and the bytes against a hand count."""

import math

import numpy as np
import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.kvcache.base import FullCache
from seqlab.models.kvcache.bitpack import bits_for, pack, packed_nbytes, unpack
from seqlab.models.kvcache.dictionary import coding_error, random_dictionary, train_dictionary
from seqlab.models.kvcache.lexico import LexicoCache
from seqlab.models.kvcache.omp import omp, omp_reference, reconstruct


def unit_rows(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("rel_tol", [None, 0.4, 0.0])
def test_batched_omp_equals_the_plain_loop(rel_tol):
    D = unit_rows(48, 12, 0)
    x = torch.randn(400, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[7] = 0  # a zero vector: no atom at all under a tolerance
    idx, coef, counts = omp(x, D, 5, rel_tol)
    ridx, rcoef, rcounts = omp_reference(x.numpy(), D.numpy(), 5, rel_tol)
    assert (counts.numpy() == rcounts).all() and (idx.numpy() == ridx).all()
    assert np.abs(coef.numpy() - rcoef).max() < 1e-9
    if rel_tol == 0.4:
        assert 0 < counts.float().mean() < 5  # the tolerance stops some vectors early
        err = (x - reconstruct(idx, coef, D)).norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)
        assert bool(((err <= 0.4 + 1e-9) | (counts == 5))[x.norm(dim=1) > 0].all())


def test_omp_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.linear_model")
    D = unit_rows(64, 16, 2)
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    idx, coef, _ = omp(x, D, 6)
    dense = np.zeros((200, 64))
    np.put_along_axis(dense, idx.numpy(), coef.numpy(), 1)
    theirs = sk.orthogonal_mp(D.numpy().T, x.numpy().T, n_nonzero_coefs=6).T
    assert np.abs(dense - theirs).max() < 1e-8


@pytest.mark.parametrize("bits", [1, 3, 10, 16])
def test_bit_packing_round_trips(bits):
    values = torch.randint(0, 1 << bits, (37,), generator=torch.Generator().manual_seed(bits))
    packed = pack(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(37, bits) == math.ceil(37 * bits / 8)
    assert torch.equal(unpack(packed, bits, 37), values)
    assert bits_for(1024) == 10 and bits_for(1025) == 11 and bits_for(2) == 1


def lexico(B=2, H=3, hd=16, N=64, **kw):
    return LexicoCache(B, H, hd, unit_rows(N, hd, 4, torch.float32), unit_rows(N, hd, 5, torch.float32), **kw)


@pytest.mark.parametrize("kw", [dict(sparsity=4, buffer=3, chunk=2), dict(sparsity=6, buffer=0, chunk=1, rel_tol=0.3),
                                dict(sparsity=5, buffer=2, chunk=1, packed_indices=True)])
def test_sparse_attention_equals_densify_then_attend(kw):
    g = torch.Generator().manual_seed(6)
    cache = lexico(**kw)
    q, k, v = (torch.randn(2, 3, 9, 16, generator=g) for _ in range(3))
    cache.attend(q, k, v)
    for _ in range(6):
        q, k, v = (torch.randn(2, 3, 1, 16, generator=g) for _ in range(3))
        K, V = cache.dense()
        ours = cache.attend(q, k, v)
        keys, values = torch.cat([K, k], 2), torch.cat([V, v], 2)
        ref = torch.softmax(q @ keys.transpose(-1, -2) / 4.0, -1) @ values
        assert (ours - ref).abs().max() < 1e-5
    assert cache.length == 15 and cache.n_compressed + cache.k_buf.shape[2] == 15


def test_the_buffer_keeps_the_newest_tokens_exact():
    cache = lexico(sparsity=3, buffer=4, chunk=2)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 10, 16, generator=g) for _ in range(3))
    cache.attend(q, k, v)
    assert cache.n_compressed == 6 and torch.equal(cache.k_buf, k[:, :, 6:].half())
    K, _ = cache.dense()
    assert torch.allclose(K[:, :, 6:], k[:, :, 6:].half().float())
    assert not torch.allclose(K[:, :, :6], k[:, :, :6], atol=1e-2)  # 3 atoms of 64 cannot code a random vector


def test_bytes_are_counted_by_hand():
    g = torch.Generator().manual_seed(8)
    B, H, hd, s = 2, 3, 16, 4
    fixed = lexico(sparsity=s, buffer=3, chunk=1)
    packed = lexico(sparsity=s, buffer=3, chunk=1, packed_indices=True)
    variable = lexico(sparsity=s, buffer=3, chunk=1, rel_tol=0.5)
    q, k, v = (torch.randn(B, H, 11, hd, generator=g) for _ in range(3))
    for cache in (fixed, packed, variable):
        cache.attend(q, k, v)
    Tc, Tb, rows = 8, 3, 8 * B * H
    exact = 2 * B * H * Tb * hd * 2  # K and V buffers in 16 bits
    assert fixed.nbytes() == 2 * rows * s * (1 + 2) + exact  # fp8 coefficient + int16 index per atom
    assert packed.nbytes() == 2 * (rows * s + math.ceil(rows * s * 6 / 8)) + exact  # 64 atoms: 6-bit indices
    nnz = variable.codes_k.nnz + variable.codes_v.nnz
    assert variable.nbytes() == nnz * 3 + 2 * (rows + 1) * 4 + exact  # int32 row pointers
    for cache in (fixed, packed, variable):
        assert cache.nbytes() == sum(t.numel() * t.element_size() for t in cache.stored().values())
        assert cache.shared_nbytes() == 2 * 64 * hd * 2
    full = FullCache(B, H, hd)
    full.attend(q, k, v)
    assert full.nbytes() == 2 * B * H * 11 * hd * 2


def test_a_decoder_with_a_near_exact_lexico_cache_writes_what_the_full_cache_writes():
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=2, d_model=64, n_heads=2, position="rope"), 20).eval()
    hd = 32
    eye = torch.eye(hd)  # the standard basis as the dictionary: 32 atoms code any vector exactly
    prompt = torch.randint(0, 20, (4, 12))
    pos, base = torch.arange(12)[None].expand(4, 12), torch.full((4,), 12)
    full = model.generate(prompt, pos, base, 8, 1, kv_cache=lambda i, B, H, d: FullCache(B, H, d))
    exact = model.generate(prompt, pos, base, 8, 1,
                           kv_cache=lambda i, B, H, d: LexicoCache(B, H, d, eye, eye, sparsity=hd, buffer=2))
    assert torch.equal(full, exact)


def test_a_trained_dictionary_codes_its_vectors_better_than_a_random_one():
    g = torch.Generator().manual_seed(9)
    basis = torch.randn(6, 16, generator=g)
    x = torch.randn(3000, 6, generator=g) @ basis  # vectors on a 6-dimensional subspace
    learned = train_dictionary(x, n_atoms=32, sparsity=3, steps=150, batch=256, lr=3e-3, seed=0)
    assert torch.allclose(learned.norm(dim=1), torch.ones(32), atol=1e-5)
    random_error = coding_error(x, random_dictionary(32, 16, seed=0), 3)
    assert coding_error(x, learned, 3) < 0.7 * random_error


def test_bad_lexico_settings_are_refused():
    with pytest.raises(BadInput, match="dictionary"):
        LexicoCache(1, 1, 16, torch.zeros(8, 12), torch.zeros(8, 16), sparsity=2)
    with pytest.raises(BadInput, match="sparsity"):
        lexico(sparsity=0)
    with pytest.raises(BadInput, match="rel_tol"):
        lexico(sparsity=2, rel_tol=1.5)
