"""KIVI: packed codes round-trip, quantization stays within half a step, attention through the cache is
attention over its dequantized keys and values, the residual windows keep their sizes, the bytes are
the packed ones, and a small decoder at 4 bits stays close to the full cache."""

import math

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.kvcache.base import FullCache
from seqlab.models.kvcache.bitpack import pack_last_dim as pack, unpack_last_dim as unpack
from seqlab.models.kvcache.kivi import KIVICache, dequantize, quantize

torch.set_num_threads(1)

FP16_EPS = 2.0**-10  # float16's spacing relative to a value, with room for two roundings


def _qkv(B, H, L, hd, seed):
    """Random queries, keys and values; the keys have a few large channels, as real keys do."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, hd, generator=g) for _ in range(3))
    k[..., :2] *= 8.0
    return q, k, v


def _half_step(groups: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Per element: half a quantization step of its group along `dim`, plus float16 rounding slack
    (the stored scale, zero and, in the cache, the 16-bit residual the codes are taken from)."""
    lo, hi = groups.amin(dim, keepdim=True), groups.amax(dim, keepdim=True)
    step = (hi - lo) / (2**bits - 1)
    slack = FP16_EPS * (lo.abs() + (hi - lo) + groups.abs()) + 1e-6
    return (step / 2 + slack).expand_as(groups)


# -- 1. packing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 33])
def test_pack_unpack_round_trip(bits, n):
    g = torch.Generator().manual_seed(n)
    codes = torch.randint(0, 2**bits, (3, 2, n), generator=g).to(torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, 2, math.ceil(n * bits / 8))
    assert torch.equal(unpack(packed, bits, n), codes)


def test_pack_puts_several_codes_in_one_byte():
    assert pack(torch.tensor([1, 2, 3, 0], dtype=torch.uint8), 2).tolist() == [1 | 2 << 2 | 3 << 4]
    assert pack(torch.tensor([5, 12], dtype=torch.uint8), 4).tolist() == [5 | 12 << 4]


# -- 2. quantization error -----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_quantization_error_is_at_most_half_a_step(bits, dim):
    x = torch.randn(6, 7, 9, generator=torch.Generator().manual_seed(bits + dim)) * 3 + 1
    x[0] = 0.5  # a constant slab: every group along dims 1 and 2 there has a zero scale
    codes, scale, zero = quantize(x, bits, dim)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**bits - 1
    assert scale.dtype == zero.dtype == torch.float16
    assert scale.shape == zero.shape == x.amax(dim, keepdim=True).shape
    err = (dequantize(codes, scale, zero) - x).abs()
    bound = scale.float() / 2 + FP16_EPS * (zero.float().abs() + (2**bits - 1) * scale.float()) + 1e-6
    assert (err <= bound).all()
    assert (err <= _half_step(x, bits, dim)).all()


@pytest.mark.parametrize("bits", [2, 4])
def test_dense_holds_every_token_within_half_a_step_in_order(bits):
    B, H, hd, G, R = 2, 2, 16, 4, 6
    q, k, v = _qkv(B, H, 30, hd, seed=bits)
    cache = KIVICache(B, H, hd, bits=bits, group=G, residual=R)
    cache.attend(q[:, :, :13], k[:, :, :13], v[:, :, :13])
    for t in range(13, 30):
        cache.attend(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1])
    K, V = cache.dense()
    assert K.shape == V.shape == (B, H, 30, hd)
    nk, nv = cache.quantized_keys, cache.quantized_values
    key_groups = k[:, :, :nk].reshape(B, H, nk // G, G, hd)  # G tokens of one channel
    key_bound = _half_step(key_groups, bits, dim=3).reshape(B, H, nk, hd)
    value_groups = v[:, :, :nv].reshape(B, H, nv, hd // G, G)  # G channels of one token
    value_bound = _half_step(value_groups, bits, dim=4).reshape(B, H, nv, hd)
    assert ((K[:, :, :nk] - k[:, :, :nk]).abs() <= key_bound).all()
    assert ((V[:, :, :nv] - v[:, :, :nv]).abs() <= value_bound).all()
    # The residual tokens are only rounded to 16 bits.
    torch.testing.assert_close(K[:, :, nk:], k[:, :, nk:].half().float(), rtol=0, atol=0)
    torch.testing.assert_close(V[:, :, nv:], v[:, :, nv:].half().float(), rtol=0, atol=0)


# -- 3. parity with attention over dense() -------------------------------------------------------------
def _attention(q, K, V):
    """Softmax attention of the last Lq tokens (queries q) over all of K, V, causal among those Lq."""
    Lq, T = q.shape[2], K.shape[2]
    logits = (q @ K.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    future = torch.arange(T)[None, :] > torch.arange(T - Lq, T)[:, None]
    return torch.softmax(logits.masked_fill(future, float("-inf")), -1) @ V


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("group, residual", [(4, 6), (8, 0), (1, 3)])
def test_attention_through_the_cache_is_attention_over_dense(bits, group, residual):
    B, H, hd = 2, 2, 16
    q, k, v = _qkv(B, H, 28, hd, seed=group + residual)
    cache = KIVICache(B, H, hd, bits=bits, group=group, residual=residual)
    y = cache.attend(q[:, :, :13], k[:, :, :13], v[:, :, :13])  # the prefill attends exactly
    torch.testing.assert_close(y, _attention(q[:, :, :13], k[:, :, :13], v[:, :, :13]), rtol=0, atol=1e-5)
    # Single tokens, then a chunk of three (causal among themselves), then single tokens again.
    steps = [(t, t + 1) for t in range(13, 20)] + [(20, 23)] + [(t, t + 1) for t in range(23, 28)]
    for a, b in steps:
        K, V = cache.dense()
        want = _attention(q[:, :, a:b], torch.cat([K, k[:, :, a:b]], 2), torch.cat([V, v[:, :, a:b]], 2))
        got = cache.attend(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert cache.quantized_keys > 0 and cache.quantized_values > 0  # the quantized parts were read


# -- 4. residual sizes ---------------------------------------------------------------------------------
def _expected_exact_keys(T, G, R):
    return T if T < R else R + (T - R) % G


@pytest.mark.parametrize("group, residual", [(8, 8), (8, 0), (4, 6), (1, 3), (5, 2)])
@pytest.mark.parametrize("prompt", [1, 5, 8, 9, 16, 23])
def test_key_groups_span_g_tokens_and_residuals_keep_their_size(group, residual, prompt):
    B, H, hd, G, R = 1, 2, 20 if group == 5 else 16, group, residual
    q, k, v = _qkv(B, H, prompt + 20, hd, seed=prompt)
    cache = KIVICache(B, H, hd, bits=2, group=G, residual=R)
    cache.attend(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt])
    for t in range(prompt, prompt + 21):
        T = cache.length
        exact_k, exact_v = cache.k_exact.shape[2], cache.v_exact.shape[2]
        assert cache.quantized_keys % G == 0
        assert exact_k == _expected_exact_keys(T, G, R)
        if T >= R:
            assert R <= exact_k <= R + G - 1
        assert exact_v == min(T, R)
        assert cache.quantized_keys + exact_k == T
        assert cache.quantized_values + exact_v == T
        assert cache.k_scale.shape[2] == cache.quantized_keys // G
        assert cache.v_scale.shape[2] == cache.quantized_values
        if t < prompt + 20:
            cache.attend(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1])


# -- 5. bytes ------------------------------------------------------------------------------------------
def _expected_nbytes(B, H, hd, T, bits, G, R):
    """The bytes KIVI keeps for T tokens, counted by hand."""
    per_byte = 8 // bits
    quantized_k = 0 if T < R else G * ((T - R) // G)
    quantized_v = max(T - R, 0)
    key_groups = quantized_k // G
    keys = key_groups * math.ceil(G * hd / per_byte) + key_groups * hd * 2 * 2 + (T - quantized_k) * hd * 2
    values = quantized_v * math.ceil(hd / per_byte) + quantized_v * (hd // G) * 2 * 2 + (T - quantized_v) * hd * 2
    return B * H * (keys + values)


@pytest.mark.parametrize("B, H, hd, bits, G, R", [(1, 2, 16, 2, 8, 8), (2, 3, 12, 4, 4, 5), (2, 1, 6, 2, 3, 0),
                                                  (1, 1, 10, 4, 5, 2)])
@pytest.mark.parametrize("prompt, steps", [(3, 0), (10, 4), (37, 9)])
def test_nbytes_is_the_packed_codes_scales_zeros_and_residuals(B, H, hd, bits, G, R, prompt, steps):
    q, k, v = _qkv(B, H, prompt + steps, hd, seed=hd + prompt)
    cache = KIVICache(B, H, hd, bits=bits, group=G, residual=R)
    cache.attend(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt])
    for t in range(prompt, prompt + steps):
        cache.attend(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1])
    T = prompt + steps
    assert cache.length == T
    assert cache.nbytes() == _expected_nbytes(B, H, hd, T, bits, G, R)
    assert cache.nbytes() == sum(t.numel() * t.element_size() for t in cache.stored().values())
    kinds = {name: t.dtype for name, t in cache.stored().items()}
    assert kinds["k_codes"] == kinds["v_codes"] == torch.uint8
    assert {kinds[n] for n in ("k_scale", "k_zero", "v_scale", "v_zero", "k_exact", "v_exact")} == {torch.float16}


def test_two_bits_store_far_fewer_bytes_than_the_full_cache():
    B, H, hd, T = 1, 2, 64, 512
    q, k, v = _qkv(B, H, T, hd, seed=0)
    kivi, full = KIVICache(B, H, hd, bits=2, group=32, residual=32), FullCache(B, H, hd)
    kivi.attend(q, k, v)
    full.attend(q, k, v)
    # 2-bit codes plus a float16 scale and zero per 32 numbers: about 0.19 of 16 bits, before the residual.
    assert kivi.nbytes() < 0.3 * full.nbytes()


# -- 6. a small decoder --------------------------------------------------------------------------------
def _sharp_decoder():
    """A random decoder whose attention is peaked (its q, k, v weights scaled up): with the initial
    weights attention is nearly uniform, and a cache that mixed up token order would go unnoticed."""
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=2, d_model=64, n_heads=2, position="rope"), 20).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.mixer.qkv.weight.mul_(4.0)
    return model


@torch.no_grad()
def _teacher_forced_logits(model, tokens, prompt, factory):
    """The last logits after the prompt and after each later token, fed one at a time."""
    B, L = tokens.shape
    caches = model.new_caches(B, L, "cpu", factory)
    out = [model(tokens[:, :prompt], None, caches, start=0)[:, -1]]
    for t in range(prompt, L):
        out.append(model(tokens[:, t : t + 1], None, caches, start=t)[:, -1])
    return torch.stack(out, 1)


def test_four_bits_keep_a_small_decoder_close_to_the_full_cache():
    model = _sharp_decoder()
    B, L, prompt = 2, 32, 12
    tokens = torch.randint(0, 20, (B, L), generator=torch.Generator().manual_seed(0))
    full = _teacher_forced_logits(model, tokens, prompt, lambda i, B, H, hd: FullCache(B, H, hd))
    kivi = _teacher_forced_logits(model, tokens, prompt, lambda i, B, H, hd: KIVICache(B, H, hd, bits=4, group=8,
                                                                                       residual=8))
    with torch.no_grad():  # the same tokens without their context: how much the past moves the logits
        alone = torch.stack([model(tokens[:, t : t + 1], None, None, start=t)[:, -1]
                             for t in range(prompt - 1, L)], 1)
    context_effect = (alone - full).abs().max()
    assert context_effect > 0.3  # the past matters, so a cache that garbled it would show
    assert (kivi - full).abs().max() < 0.05 * context_effect

    prompt_pos = torch.arange(prompt).expand(B, prompt)
    base = torch.full((B,), prompt)
    factory = lambda i, B, H, hd: KIVICache(B, H, hd, bits=4, group=8, residual=8)  # noqa: E731
    generated = model.generate(tokens[:, :prompt], prompt_pos, base, 6, 1, kv_cache=factory)
    reference = model.generate(tokens[:, :prompt], prompt_pos, base, 6, 1,
                               kv_cache=lambda i, B, H, hd: FullCache(B, H, hd))
    assert torch.equal(generated, reference)


# -- 7. bad settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, words", [
    (dict(bits=3), "2 or 4 bits"),
    (dict(bits=8), "2 or 4 bits"),
    (dict(group=0), "at least 1"),
    (dict(residual=-1), "negative"),
    (dict(group=5), "does not divide head_dim 16"),
])
def test_bad_settings_are_refused(settings, words):
    with pytest.raises(BadInput, match=words):
        KIVICache(1, 2, 16, **{"bits": 2, "group": 4, "residual": 4, **settings})
