"""Mamba-1: the chunked scan against the plain loop (values and gradients), decoding with a cache,
the state size, causality and the initialisation; mamba_ssm's CUDA kernel where it is installed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqlab.models.mixers.mamba import (
    Mamba,
    cuda_scan_available,
    selective_scan_chunked,
    selective_scan_cuda,
    selective_scan_reference,
)

torch.set_num_threads(1)
f64, f32 = torch.float64, torch.float32
TOL = 1e-5


def scan_inputs(batch, L, d_inner, d_state, dtype, seed=0, delta_scale=1.0, a_scale=1.0, device="cpu"):
    """u, delta, A, B, C, D, z, h0 of the scan's shapes, all requiring grad."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=f64)

    u, z = rand(batch, L, d_inner), rand(batch, L, d_inner)
    delta = F.softplus(rand(batch, L, d_inner) - 1.0) * delta_scale  # > 0, as softplus(dt_proj(.)) is
    A = -torch.exp(rand(d_inner, d_state) * 0.5) * a_scale  # < 0
    B, C = rand(batch, L, d_state), rand(batch, L, d_state)
    D, h0 = rand(d_inner), rand(batch, d_inner, d_state)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (u, delta, A, B, C, D, z, h0)]


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def outputs_and_grads(fn, inputs, use_z, use_D, use_h0, seed=1):
    """y and the final state, and the gradients of a random linear function of both w.r.t. the inputs."""
    u, delta, A, B, C, D, z, h0 = inputs
    y, h = fn(u, delta, A, B, C, D if use_D else None, z if use_z else None, h0=h0 if use_h0 else None,
              return_state=True)
    g = torch.Generator().manual_seed(seed)
    wy, wh = torch.randn(y.shape, generator=g, dtype=f64).to(y), torch.randn(h.shape, generator=g, dtype=f64).to(h)
    used = [u, delta, A, B, C] + [D] * use_D + [z] * use_z + [h0] * use_h0
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), used)
    return y, h, grads


# (1) the chunked scan computes the reference's numbers -------------------------------------------

CASES = [  # L, chunk_size, use_z, use_D, use_h0
    (1, 16, True, True, False),   # one token
    (1, 1, False, True, True),
    (7, 3, True, True, True),     # L not a multiple of the chunk
    (16, 16, False, False, False),
    (33, 8, True, True, False),
    (20, 64, True, False, True),  # one chunk longer than the sequence
    (48, 16, True, True, True),
]


@pytest.mark.parametrize("dtype", [f64, f32], ids=["float64", "float32"])
@pytest.mark.parametrize("L,chunk,use_z,use_D,use_h0", CASES)
def test_chunked_scan_matches_reference_values_and_gradients(dtype, L, chunk, use_z, use_D, use_h0):
    inputs = scan_inputs(2, L, 6, 4, dtype, seed=L + chunk)
    ref = outputs_and_grads(selective_scan_reference, inputs, use_z, use_D, use_h0)
    got = outputs_and_grads(lambda *a, **k: selective_scan_chunked(*a, **k, chunk_size=chunk), inputs, use_z, use_D, use_h0)
    assert max_diff(got[0], ref[0]) <= TOL  # y
    assert max_diff(got[1], ref[1]) <= TOL  # final state
    for g_got, g_ref in zip(got[2], ref[2]):
        assert max_diff(g_got, g_ref) <= TOL


def test_chunked_backward_passes_gradcheck():
    """The hand-written backward against finite differences, in float64."""
    u, delta, A, B, C, D, z, h0 = scan_inputs(2, 5, 3, 2, f64, seed=3)

    def fn(u, delta, A, B, C, D, z, h0):
        return selective_scan_chunked(u, delta, A, B, C, D, z, h0=h0, return_state=True, chunk_size=2)

    assert torch.autograd.gradcheck(fn, (u, delta, A, B, C, D, z, h0))


@pytest.mark.parametrize("delta_scale,a_scale", [(30.0, 40.0), (1e-4, 1e-3)], ids=["fast-decay", "slow-decay"])
def test_chunked_scan_is_stable_at_extreme_decays(delta_scale, a_scale):
    """Decays of exp(-1000) per step (a factored exp(+sum) form would overflow) and of almost 1."""
    inputs = scan_inputs(2, 40, 5, 3, f32, seed=5, delta_scale=delta_scale, a_scale=a_scale)
    ref = outputs_and_grads(selective_scan_reference, inputs, True, True, True)
    got = outputs_and_grads(lambda *a, **k: selective_scan_chunked(*a, **k, chunk_size=16), inputs, True, True, True)
    for r, g in zip([ref[0], ref[1], *ref[2]], [got[0], got[1], *got[2]]):
        assert torch.isfinite(g).all()
        assert max_diff(g, r) <= TOL * max(1.0, r.abs().max().item())


# (2) the module: chunked and sequential scans agree, parameters included ------------------------

@pytest.mark.parametrize("dtype", [f64, f32], ids=["float64", "float32"])
@pytest.mark.parametrize("L", [1, 13])
def test_module_chunked_matches_sequential(dtype, L):
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, chunk_size=4).to(dtype)
    x = torch.randn(2, L, 16, dtype=dtype, requires_grad=True)
    params = [x, *m.parameters()]
    results = {}
    for scan in ("sequential", "chunked"):
        m.scan = scan
        y = m(x)
        results[scan] = (y, torch.autograd.grad(y.square().sum(), params))
    assert max_diff(results["chunked"][0], results["sequential"][0]) <= TOL
    for g_got, g_ref in zip(results["chunked"][1], results["sequential"][1]):
        assert max_diff(g_got, g_ref) <= TOL


# (3) decoding with a cache gives the full forward's outputs -------------------------------------

@pytest.mark.parametrize("scan", ["chunked", "sequential"])
@pytest.mark.parametrize("pieces", [[1] * 11, [2] + [1] * 9, [5] + [1] * 6, [4, 3, 1, 3]])
def test_cache_decoding_equals_full_forward(scan, pieces):
    """A prompt of any length (also shorter than the conv's window), then tokens one at a time or a
    few at once after a saved state."""
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, scan=scan, chunk_size=3).double().eval()
    x = torch.randn(2, sum(pieces), 16, dtype=f64)
    with torch.no_grad():
        full = m(x)
        cache = m.init_cache(2, x.shape[1], x.device, f64)
        outs, t = [], 0
        for n in pieces:
            outs.append(m(x[:, t : t + n], None, cache))
            t += n
    assert cache.length == x.shape[1]
    assert max_diff(torch.cat(outs, dim=1), full) <= 1e-12


# (4) state size: a hand count, and the cache's own tensors --------------------------------------

@pytest.mark.parametrize("d_model,d_state,d_conv,expand,want", [
    (64, 16, 4, 2, 128 * 16 + 128 * 3),  # 2432
    (40, 8, 2, 3, 120 * 8 + 120 * 1),    # 1080
    (8, 1, 1, 1, 8 * 1 + 0),             # no conv memory at width 1
])
def test_state_size_is_a_hand_count_and_the_cache_size(d_model, d_state, d_conv, expand, want):
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    assert m.state_size(1) == m.state_size(1000) == want
    cache = m.init_cache(3, 100, "cpu", f32)
    assert (cache.conv.numel() + cache.ssm.numel()) // 3 == want
    assert cache.conv.shape == (3, expand * d_model, d_conv - 1) and cache.ssm.shape == (3, expand * d_model, d_state)


# (5) causality: no output depends on a later input ----------------------------------------------

@pytest.mark.parametrize("scan", ["chunked", "sequential"])
def test_output_at_t_ignores_inputs_after_t(scan):
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, scan=scan, chunk_size=4).double()
    x = torch.randn(2, 20, 16, dtype=f64)
    t0 = 9  # mid-chunk
    x2 = x.clone()
    x2[:, t0:] += torch.randn_like(x2[:, t0:])
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert max_diff(y[:, :t0], y2[:, :t0]) == 0.0
    assert (y[:, t0] - y2[:, t0]).abs().min() > 0  # and the input at t0 itself is seen


# (6) initialisation and arguments --------------------------------------------------------------

def test_init_follows_mamba_simple():
    m = Mamba(100, d_state=16)
    assert m.dt_rank == math.ceil(100 / 16) == 7 and m.d_inner == 200
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert torch.allclose(-torch.exp(m.A_log), -torch.arange(1, 17.0).expand(200, -1))  # S4D-real
    assert torch.equal(m.D, torch.ones(200))
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound
    # a model-wide init of every Linear (as the decoder's) is undone by reset_special_parameters
    torch.nn.init.zeros_(m.dt_proj.bias)
    m.reset_special_parameters()
    assert F.softplus(m.dt_proj.bias).max() <= 0.1 * (1 + 1e-5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown scan"):
        Mamba(16, scan="parallel")
    with pytest.raises(ValueError, match="chunk_size"):
        Mamba(16, chunk_size=0)
    with pytest.raises(ValueError, match="d_state"):
        Mamba(16, d_state=0)


# (7) mamba_ssm's kernel, where there is one ------------------------------------------------------

@pytest.mark.skipif(not cuda_scan_available(), reason="needs CUDA and an importable mamba_ssm")
def test_cuda_kernel_matches_chunked_scan():
    inputs = scan_inputs(2, 100, 32, 16, f32, seed=7, device="cuda")
    u, delta, A, B, C, D, z, _ = inputs

    def run(fn):
        y, h = fn(u, delta, A, B, C, D, z, return_state=True)
        grads = torch.autograd.grad(y.square().sum(), [u, delta, A, B, C, D, z])
        return [y, h, *grads]

    for got, ref in zip(run(selective_scan_cuda), run(selective_scan_chunked)):
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
