"""Linear attention: reference, recurrent and chunked forms agree; the cache decodes like the full forward."""

import math
from functools import partial

import pytest
import torch

from seqlab.models import ModelConfig, build
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.mixers.linear import (
    LinearAttention,
    feature_map,
    feature_size,
    linear_attention_chunked,
    linear_attention_recurrent,
    linear_attention_reference,
)

torch.set_num_threads(1)

# (feature map, normalize): identity only unnormalized, where its denominator cannot cross zero.
COMBOS = [("identity", False), ("elu", True), ("elu", False), ("taylor", True), ("taylor", False)]


def _qkv(kind, B=2, H=2, L=13, d=4, hd=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (feature_map(torch.randn(B, H, L, d, generator=g, dtype=dtype), kind) for _ in range(2))
    v = torch.randn(B, H, L, hd, generator=g, dtype=dtype)
    return [t.detach().requires_grad_() for t in (q, k, v)]


def _run(fn, q, k, v, grad_out):
    y = fn(q, k, v)
    q.grad = k.grad = v.grad = None
    (y * grad_out).sum().backward()
    return y.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()


def test_taylor_kernel_is_second_order_exp():
    d = 16
    q, k = torch.randn(5, d, dtype=torch.float64), torch.randn(5, d, dtype=torch.float64)
    s = (q * k).sum(-1) / math.sqrt(d)
    kernel = (feature_map(q, "taylor") * feature_map(k, "taylor")).sum(-1)
    assert torch.allclose(kernel, 1 + s + s**2 / 2)
    assert feature_map(q, "taylor").shape[-1] == feature_size("taylor", d) == 1 + 16 + 256
    assert torch.all(feature_map(q, "elu") > 0)


@pytest.mark.parametrize("kind,normalize", COMBOS)
@pytest.mark.parametrize("L", [1, 5, 8, 13, 24])
def test_three_forms_agree_forward_and_gradient_float64(kind, normalize, L):
    q, k, v = _qkv(kind, L=L)
    grad_out = torch.randn(2, 2, L, 3, dtype=torch.float64)
    ref = _run(lambda *a: linear_attention_reference(*a, normalize), q, k, v, grad_out)
    rec = _run(lambda *a: linear_attention_recurrent(*a, normalize)[0], q, k, v, grad_out)
    chk = _run(lambda *a: linear_attention_chunked(*a, normalize, chunk_size=4)[0], q, k, v, grad_out)
    for name, got in (("recurrent", rec), ("chunked", chk)):
        for a, b in zip(ref, got):
            assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item()), name


@pytest.mark.parametrize("kind,normalize", COMBOS)
def test_three_forms_agree_float32(kind, normalize):
    q, k, v = _qkv(kind, L=37, d=8, hd=8, dtype=torch.float32)
    grad_out = torch.randn(2, 2, 37, 8)
    ref = _run(lambda *a: linear_attention_reference(*a, normalize), q, k, v, grad_out)
    rec = _run(lambda *a: linear_attention_recurrent(*a, normalize)[0], q, k, v, grad_out)
    chk = _run(lambda *a: linear_attention_chunked(*a, normalize, chunk_size=16)[0], q, k, v, grad_out)
    for got in (rec, chk):
        for a, b in zip(ref, got):  # float32 sums of ~37 terms: relative to the largest entry
            assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("kind,normalize", COMBOS)
def test_state_carry_splits_the_sequence_anywhere(kind, normalize):
    q, k, v = (t.detach() for t in _qkv(kind, L=11))
    full, (S, z) = linear_attention_chunked(q, k, v, normalize, chunk_size=4)
    assert (z is None) == (not normalize)
    # The final state is sum_t phi(k_t) v_t^T (and sum_t phi(k_t)).
    assert torch.allclose(S, torch.einsum("bhtf,bhtd->bhfd", k, v))
    if normalize:
        assert torch.allclose(z, k.sum(2))
    chunked = partial(linear_attention_chunked, normalize=normalize, chunk_size=4)
    recurrent = partial(linear_attention_recurrent, normalize=normalize)
    for first, second in ((chunked, recurrent), (recurrent, chunked), (chunked, chunked)):
        head, state = first(q[:, :, :6], k[:, :, :6], v[:, :, :6])
        tail, (S2, z2) = second(q[:, :, 6:], k[:, :, 6:], v[:, :, 6:], state=state)
        assert torch.allclose(torch.cat([head, tail], 2), full)
        assert torch.allclose(S, S2)
        if normalize:
            assert torch.allclose(z, z2)


def _ctx(L, start=0, B=2):
    return SeqContext(positions=torch.arange(start, start + L).expand(B, L))


@pytest.mark.parametrize("kind", ["identity", "elu", "taylor"])
def test_module_impls_agree_and_cache_decodes_like_full_forward(kind):
    torch.manual_seed(0)
    mixer = LinearAttention(32, 4, kind, feature_dim=4, chunk_size=4).double()
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    full = mixer(x, _ctx(11))
    for impl in ("reference", "recurrent"):
        mixer.impl = impl
        assert (mixer(x, _ctx(11)) - full).abs().max() <= 1e-10
    cache = mixer.init_cache(2, 11, "cpu", torch.float64)
    first = mixer(x[:, :7], _ctx(7), cache)  # a prompt longer than one chunk and not a multiple of it
    rest = [mixer(x[:, t : t + 1], _ctx(1, t), cache) for t in range(7, 11)]
    assert (torch.cat([first] + rest, 1) - full).abs().max() <= 1e-10
    assert cache.length == 11


@pytest.mark.parametrize("kind", ["elu", "taylor"])
def test_decoder_with_linear_mixer_decodes_the_same_with_and_without_cache(kind):
    torch.manual_seed(0)
    model = build(ModelConfig(position="none", n_layers=2, d_model=32, n_heads=4), vocab_size=24).eval()
    for b in model.blocks:  # the lead wires configs; here the mixer is swapped in by hand
        b.mixer = LinearAttention(32, 4, kind, feature_dim=4, chunk_size=4)
    prompt = torch.randint(3, 24, (3, 9))
    pos, base = torch.arange(9).expand(3, 9), torch.full((3,), 9)
    x = torch.randint(3, 24, (2, 10))
    caches = [b.mixer.init_cache(2, 10, "cpu", torch.float32) for b in model.blocks]
    steps = [model(x[:, :6], None, caches)] + [model(x[:, t : t + 1], None, caches, start=t) for t in range(6, 10)]
    assert torch.allclose(model(x), torch.cat(steps, 1), atol=1e-5)
    cached = model.generate(prompt, pos, base, 8, eos=2, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, pos, base, 8, eos=2, use_cache=False))


@pytest.mark.parametrize("kind", ["identity", "elu", "taylor"])
def test_causality_later_inputs_do_not_change_earlier_outputs(kind):
    torch.manual_seed(0)
    mixer = LinearAttention(16, 2, kind, feature_dim=4, chunk_size=4)
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] += torch.randn(1, 4, 16)
    out_x, out_y = mixer(x, _ctx(10, B=1)), mixer(y, _ctx(10, B=1))
    assert torch.equal(out_x[:, :6], out_y[:, :6])  # exactly: the same chunks see the same numbers
    assert not torch.allclose(out_x[:, 6:], out_y[:, 6:])


@pytest.mark.parametrize("kind,normalize", [("identity", False), ("elu", True), ("taylor", True), ("taylor", False)])
def test_state_size_by_hand_and_by_cache(kind, normalize):
    mixer = LinearAttention(64, 4, kind, feature_dim=8, normalize=normalize)
    F = {"identity": 8, "elu": 8, "taylor": 1 + 8 + 64}[kind]
    hand = 4 * (F * 16 + (F if normalize else 0))  # 4 heads, head_dim 16
    assert mixer.state_size(1) == mixer.state_size(10_000) == hand
    cache = mixer.init_cache(3, 50, "cpu", torch.float32)
    kept = cache.S.numel() + (cache.z.numel() if cache.z is not None else 0)
    assert kept == 3 * hand


def test_defaults_follow_the_papers():
    taylor, elu, ident = (LinearAttention(64, 4, k) for k in ("taylor", "elu", "identity"))
    assert (taylor.feature_dim, taylor.n_features, taylor.normalize) == (16, 273, True)
    assert (elu.feature_dim, elu.normalize) == (16, True)  # head_dim
    assert (ident.feature_dim, ident.normalize) == (16, False)
    with pytest.raises(ValueError, match="unknown feature map"):
        LinearAttention(64, 4, "softmax")
    with pytest.raises(NotImplementedError, match="causal only"):
        ctx = _ctx(3)
        ctx.key_mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
        elu(torch.randn(2, 3, 64), ctx)
