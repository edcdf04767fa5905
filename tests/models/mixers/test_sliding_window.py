"""Sliding-window attention: SDPA with a band mask agrees with an explicit loop; the ring cache decodes alike."""

import pytest
import torch

from seqlab.models import ModelConfig, build
from seqlab.models.mixers.attention import CausalSelfAttention, SeqContext
from seqlab.models.positions import apply_rope, rope_cos_sin
from seqlab.models.mixers.sliding_window import SlidingWindowAttention, sliding_window_reference

torch.set_num_threads(1)

D, H, HD = 16, 2, 8


def _ctx(L, position, start=0, B=2):
    positions = torch.arange(start, start + L).expand(B, L)
    rope = rope_cos_sin(positions[:1], HD) if position == "rope" else None
    return SeqContext(positions=positions, rope=rope)


def _mixer(window, position, dtype=torch.float64):
    torch.manual_seed(0)
    return SlidingWindowAttention(D, H, window, position).to(dtype)


def _reference_forward(mixer, x, ctx):
    """The mixer's own projections around the explicit per-query loop."""
    B, L, _ = x.shape
    q, k, v = mixer.qkv(x).view(B, L, 3, H, HD).permute(2, 0, 3, 1, 4)
    if ctx.rope is not None:
        q, k = apply_rope(q, *ctx.rope), apply_rope(k, *ctx.rope)
    slopes = mixer.slopes if mixer.position == "alibi" else None
    return mixer.proj(sliding_window_reference(q, k, v, mixer.window, slopes).transpose(1, 2).reshape(B, L, D))


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
@pytest.mark.parametrize("window", [1, 3, 7, 20])
@pytest.mark.parametrize("L", [1, 7, 12])
def test_sdpa_matches_reference_loop_forward_and_gradient(position, window, L):
    mixer = _mixer(window, position)
    x = torch.randn(2, L, D, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, L, D, dtype=torch.float64)
    ctx, wrt = _ctx(L, position), (x, mixer.qkv.weight, mixer.proj.weight)
    outs = []
    for fn in (mixer, lambda x, ctx: _reference_forward(mixer, x, ctx)):
        y = fn(x, ctx)
        outs.append((y.detach(), *torch.autograd.grad((y * grad_out).sum(), wrt)))
    for a, b in zip(*outs):
        assert (a - b).abs().max() <= 1e-10


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
def test_window_at_least_the_length_is_full_causal_attention(position):
    full = CausalSelfAttention(D, H, position).double()
    mixer = _mixer(12, position)
    mixer.load_state_dict(full.state_dict())
    x = torch.randn(2, 12, D, dtype=torch.float64)
    assert (mixer(x, _ctx(12, position)) - full(x, _ctx(12, position))).abs().max() <= 1e-10


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
@pytest.mark.parametrize("prompt", [2, 5, 9])  # shorter than, equal to and longer than the window
def test_ring_cache_decodes_like_full_forward(position, prompt):
    mixer, L = _mixer(5, position), 16
    x = torch.randn(2, L, D, dtype=torch.float64)
    full = mixer(x, _ctx(L, position))
    cache = mixer.init_cache(2, L, "cpu", torch.float64)
    outs = [mixer(x[:, :prompt], _ctx(prompt, position), cache)]
    t = prompt
    for n in (1, 3, 1, 7, 1, 1, 1):  # single tokens and blocks of several after a cached prefix
        n = min(n, L - t)
        if n:
            outs.append(mixer(x[:, t : t + n], _ctx(n, position, start=t), cache))
            t += n
    assert t == L and cache.length == L
    assert (torch.cat(outs, 1) - full).abs().max() <= 1e-10


@pytest.mark.parametrize("position", ["none", "rope", "alibi"])
def test_decoder_with_window_mixer_decodes_the_same_with_and_without_cache(position):
    torch.manual_seed(0)
    model = build(ModelConfig(position=position, n_layers=2, d_model=32, n_heads=4), vocab_size=24).eval()
    for b in model.blocks:  # the lead wires configs; here the mixer is swapped in by hand
        b.mixer = SlidingWindowAttention(32, 4, window=4, position=position)
    prompt = torch.randint(3, 24, (3, 9))
    pos, base = torch.arange(9).expand(3, 9), torch.full((3,), 9)
    cached = model.generate(prompt, pos, base, 8, eos=2, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, pos, base, 8, eos=2, use_cache=False))


def test_causal_and_blind_beyond_the_window():
    mixer, L = _mixer(3, "rope", torch.float32), 12
    x = torch.randn(1, L, D)
    later, far = x.clone(), x.clone()
    later[:, 8:] += 1.0  # the future of t < 8
    far[:, 2] += 1.0  # more than window - 1 tokens before t >= 5
    out = mixer(x, _ctx(L, "rope", B=1))
    assert torch.allclose(out[:, :8], mixer(later, _ctx(L, "rope", B=1))[:, :8], atol=1e-6)
    assert not torch.allclose(out[:, 8:], mixer(later, _ctx(L, "rope", B=1))[:, 8:])
    out_far = mixer(far, _ctx(L, "rope", B=1))
    assert torch.allclose(out[:, 5:], out_far[:, 5:], atol=1e-6)
    assert not torch.allclose(out[:, 2:5], out_far[:, 2:5])


def test_state_size_by_hand_and_by_cache():
    mixer = SlidingWindowAttention(64, 4, window=10)  # head_dim 16
    assert mixer.state_size(3) == 2 * 4 * 16 * 3  # fewer tokens than the window: all of them
    assert mixer.state_size(9) == mixer.state_size(1000) == 2 * 4 * 16 * 9  # the window less the new token
    cache = mixer.init_cache(3, 1000, "cpu", torch.float32)  # one slot more, for the arriving token
    assert cache.k.numel() + cache.v.numel() == 3 * (mixer.state_size(1000) + 2 * 4 * 16)
    assert SlidingWindowAttention(64, 4, window=1).state_size(50) == 0  # a token that reads only itself


def test_rejects_unsupported_settings():
    with pytest.raises(ValueError, match="window"):
        SlidingWindowAttention(16, 2, window=0)
    with pytest.raises(ValueError, match="coupling_relative"):
        SlidingWindowAttention(16, 2, window=4, position="coupling_relative")
    with pytest.raises(NotImplementedError, match="causal only"):
        mixer = SlidingWindowAttention(16, 2, window=4)
        ctx = _ctx(3, "none")
        ctx.key_mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
        mixer(torch.randn(2, 3, 16), ctx)
