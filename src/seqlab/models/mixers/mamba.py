"""Mamba-1: the selective state space mixer (Gu & Dao 2023), the `Mamba` block of mamba_ssm.

    x (B, L, D) -> in_proj -> u, z                       (B, L, d_inner) each, d_inner = expand * D
    u -> causal depthwise conv1d (width d_conv) -> silu
    u -> x_proj -> dt (dt_rank), B, C (d_state each)     B and C are shared by all channels
    delta = softplus(dt_proj(dt))                        (B, L, d_inner), the step size of each channel
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t       h: (d_inner, d_state) per sequence, A = -exp(A_log)
    y_t = C_t . h_t + D u_t,  y * silu(z) -> out_proj    (B, L, D)

A is diagonal per channel and state (S4D-real init: A[d, n] = -(n + 1)), so every number of the
state decays on its own clock; "selective" because delta, B and C depend on the input.

The scan (the recurrence and the read-out y) has three computations of one function:
  selective_scan_reference  a plain loop over time; obviously correct
  selective_scan_chunked    the CPU training path: chunks of time with a hand-written backward
  selective_scan_cuda       mamba_ssm's fused kernel, where it is installed and the input is on CUDA

Why the chunked scan is not Mamba-2's SSD form: SSD turns a chunk into matrix products because its
decay is one scalar per head, so C_t . B_j can be contracted over the state before the decay is
applied. Here the decay exp(A[d, n] (S_t - S_j)) differs for every channel d and state n, so a chunk
of T steps needs a (T, T, d_inner, d_state) tensor of exponentials: T times the work of the
recurrence, all of it elementwise. Measured (one thread, batch 16, length 256, d_inner 256,
d_state 16): the intra-chunk part alone took 2.1 s forward + backward at T = 4 and 10 s at T = 16,
against 0.8 s for mambapy's whole parallel scan and about 0.2 s for the scan below.

What is slow on a CPU is memory traffic over (B, L, d_inner, d_state) tensors, so the chunked scan
keeps each chunk's tensors small enough to stay in cache: per chunk it builds the decays and inputs
of all T steps at once, runs the recurrence step by step in place, and reads the chunk out with one
batched matrix product. Only the state entering each chunk is saved; the backward recomputes a
chunk's states from it and runs the adjoint recurrence backwards through the chunk. Stability: the
only exponentials are exp(delta A) with delta > 0 and A < 0, numbers in (0, 1]; nothing is divided
by a decay, so a state that has decayed to nothing stays exactly that.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import PositiveInt

from seqlab.core.configs import Config
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.mixers.registry import mixer

SCANS = ("auto", "chunked", "sequential", "cuda")


def _read_out(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """C . h plus the skip D u, gated by silu(z): the part of the scan outside the recurrence."""
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, h0=None, return_state: bool = False):
    """The scan one step at a time, channels last (mamba_ssm's functions take (batch, d_inner, L)).

    u, delta, z: (batch, L, d_inner); A: (d_inner, d_state); B, C: (batch, L, d_state); D: (d_inner,);
    h0: (batch, d_inner, d_state), the state before the first step (zeros if None).
    Returns y (batch, L, d_inner), and the final state when `return_state`.
    """
    batch, L, d_inner = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1]) if h0 is None else h0
    ys = []
    # unbind, not u[:, t]: the backward of indexing writes each step's gradient into a zero tensor of
    # the full input's size, which makes the loop's backward quadratic in L.
    for u_t, delta_t, B_t, C_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        decay = torch.exp(delta_t[:, :, None] * A)  # (batch, d_inner, d_state)
        h = decay * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))  # (batch, d_inner)
    y = _read_out(torch.stack(ys, dim=1), u, D, z)
    return (y, h) if return_state else y


class _ChunkedScan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = a_t * h_{t-1} + x_t B_t, a_t = exp(delta_t A), x_t = delta_t u_t.

    Backward, with G_t = dLoss/dh_t = gy_t C_t + a_{t+1} * G_{t+1} (the adjoint recurrence, run
    backwards): dx_t = G_t . B_t, dB_t = x_t . G_t, dC_t = gy_t . h_t, and through the decay
    dlog(a_t) = G_t * a_t * h_{t-1}, whence ddelta_t = sum_n dlog(a_t) A + dx_t u_t and
    dA = sum over batch and time of dlog(a_t) delta_t; dh0 = a_0 * G_0.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk_size: int):
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        batch, L, d_inner = u.shape
        x = delta * u  # (batch, L, d_inner)
        y = torch.empty_like(u)
        h = u.new_zeros(batch, d_inner, A.shape[1]) if h0 is None else h0.to(u.dtype)
        starts = []  # the state entering each chunk: all the backward keeps of the forward's states
        for s in range(0, L, chunk_size):
            starts.append(h)
            e = min(s + chunk_size, L)
            hs = _chunk_states(delta[:, s:e], x[:, s:e], A, B[:, s:e], h)  # (batch, T, d_inner, d_state)
            y[:, s:e] = torch.matmul(hs, C[:, s:e, :, None]).squeeze(-1)
            h = hs[:, -1].clone()  # a copy, so the chunk's big tensor can be freed
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        ctx.chunk_size, ctx.has_h0 = chunk_size, h0 is not None
        ctx.set_materialize_grads(False)
        return y, h

    @staticmethod
    def backward(ctx, gy, g_last):
        u, delta, A, B, C, starts = ctx.saved_tensors
        L = u.shape[1]
        x = delta * u
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        gx, gdelta, gB, gC = torch.empty_like(u), torch.empty_like(u), torch.empty_like(B), torch.empty_like(C)
        gA = torch.zeros_like(A)
        carry = torch.zeros_like(starts[0]) if g_last is None else g_last  # a_{t+1} * G_{t+1} past the chunk's end
        for c in reversed(range(len(starts))):
            s = c * ctx.chunk_size
            e = min(s + ctx.chunk_size, L)
            h_in = starts[c]
            decay = (delta[:, s:e, :, None] * A).exp_()  # (batch, T, d_inner, d_state), recomputed
            hs = _chunk_states(delta[:, s:e], x[:, s:e], A, B[:, s:e], h_in, decay)
            G = gy[:, s:e, :, None] * C[:, s:e, None, :]  # gy_t C_t, made G_t in place below
            aG = torch.empty_like(G)  # a_t * G_t
            for t in reversed(range(e - s)):
                g = G[:, t].add_(carry)
                carry = torch.mul(decay[:, t], g, out=aG[:, t])
            carry = carry.clone()  # aG is overwritten next; the chunk before needs this one
            gx[:, s:e] = torch.matmul(G, B[:, s:e, :, None]).squeeze(-1)
            gB[:, s:e] = torch.matmul(x[:, s:e, None, :], G).squeeze(2)
            gC[:, s:e] = torch.matmul(gy[:, s:e, None, :], hs).squeeze(2)
            glog = aG  # dlog(a_t) = a_t * G_t * h_{t-1}, in place
            glog[:, 1:].mul_(hs[:, :-1])
            glog[:, 0].mul_(h_in)
            gdelta[:, s:e] = torch.einsum("btdn,dn->btd", glog, A)
            gA += torch.einsum("btdn,btd->dn", glog, delta[:, s:e])
        gdelta += gx * u
        gu = gx * delta
        return gu, gdelta, gA, gB, gC, (carry if ctx.has_h0 else None), None


def _chunk_states(delta, x, A, B, h_in, decay=None) -> torch.Tensor:
    """The states h_t of one chunk, (batch, T, d_inner, d_state), from the state h_in before it."""
    if decay is None:
        decay = (delta[..., None] * A).exp_()  # (batch, T, d_inner, d_state), in (0, 1]
    hs = x[..., None] * B[:, :, None, :]  # x_t B_t, turned into h_t in place
    h = h_in
    for t in range(hs.shape[1]):
        h = hs[:, t].addcmul_(decay[:, t], h)
    return hs


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, h0=None, return_state: bool = False,
                           chunk_size: int = 16):
    """selective_scan_reference's result (same arguments), computed chunk by chunk for speed.

    `chunk_size` trades Python steps against cache: each chunk holds a few (batch, chunk_size,
    d_inner, d_state) tensors; 8 to 16 was fastest at batch 16, d_inner 256, d_state 16 on one core.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    y, h = _ChunkedScan.apply(u, delta, A, B, C, h0, chunk_size)
    y = _read_out(y, u, D, z)
    return (y, h) if return_state else y


@functools.lru_cache(maxsize=1)
def _cuda_scan_fn():
    """mamba_ssm's selective_scan_fn, or None where it cannot be imported (no CUDA build, no package)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA extension
        return None
    return selective_scan_fn


def cuda_scan_available() -> bool:
    return torch.cuda.is_available() and _cuda_scan_fn() is not None


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, return_state: bool = False):
    """The same scan by mamba_ssm's kernel (inputs on CUDA; it always starts from a zero state)."""
    fn = _cuda_scan_fn()
    if fn is None:
        raise RuntimeError("scan='cuda' needs mamba_ssm (pip install mamba-ssm) on a CUDA machine")

    def channels_first(v):  # (batch, L, ·) -> (batch, ·, L), the kernel's layout
        return None if v is None else v.transpose(1, 2).contiguous()

    out = fn(channels_first(u), channels_first(delta), A.float(), channels_first(B), channels_first(C),
             None if D is None else D.float(), channels_first(z), delta_softplus=False, return_last_state=return_state)
    if return_state:
        y, h = out
        return y.transpose(1, 2), h
    return out.transpose(1, 2)


class MambaCache:
    """What Mamba keeps between tokens: the last d_conv - 1 conv inputs and the SSM state."""

    def __init__(self, batch: int, d_inner: int, d_conv: int, d_state: int, device, dtype):
        self.conv = torch.zeros(batch, d_inner, d_conv - 1, device=device, dtype=dtype)  # Conv1d's layout
        self.ssm = torch.zeros(batch, d_inner, d_state, device=device, dtype=dtype)
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the sequences `rows` (B',) of the batch, in that order."""
        self.conv, self.ssm = self.conv[rows], self.ssm[rows]

    def snapshot(self) -> tuple:
        return self.conv.clone(), self.ssm.clone(), self.length

    def put_row(self, row: int, src: "MambaCache", src_row: int = 0) -> None:
        """Take sequence `src_row` of another cache into row `row` (the serving engine's slots). `length` > 0 makes
        the next step start from the saved states (a fresh row's zero state is the same as none)."""
        self.conv[row], self.ssm[row] = src.conv[src_row], src.ssm[src_row]
        self.length = max(self.length, src.length)

    def restore(self, state: tuple) -> None:
        self.conv, self.ssm, self.length = state[0].clone(), state[1].clone(), state[2]


class Mamba(nn.Module):
    """The Mamba-1 mixer: (B, L, d_model) -> (B, L, d_model). Parameter names follow mamba_ssm's."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto",
                 scan: str = "auto", chunk_size: int = 16, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_scale: float = 1.0, conv_bias: bool = True, bias: bool = False):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand),
                        ("chunk_size", chunk_size)):
            if v < 1:
                raise ValueError(f"{name} must be positive, got {v}")
        if scan not in SCANS:
            raise ValueError(f"unknown scan '{scan}' (known: {', '.join(SCANS)})")
        if scan == "cuda" and _cuda_scan_fn() is None:
            raise RuntimeError("scan='cuda' needs mamba_ssm (pip install mamba-ssm)")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan, self.chunk_size = scan, chunk_size
        self.dt_min, self.dt_max, self.dt_init_floor, self.dt_scale = dt_min, dt_max, dt_init_floor, dt_scale

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)  # u and z in one matmul
        # Depthwise: each channel convolves its own past d_conv inputs. Padding is done in forward, with
        # zeros or with a cache's saved inputs, so one code path serves training and decoding.
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        # delta has rank dt_rank before this projection back to one step size per channel.
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        # As in mamba_ssm: no weight decay on A_log and D (decay would pull A toward -1 and D to 0), and
        # dt_proj's bias is not re-initialised by a model-wide init.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True
        self.reset_special_parameters()

    def reset_special_parameters(self):
        """Mamba's own init of dt_proj, A_log and D, which a generic init of every Linear would undo.

        dt_proj: softplus(bias) is log-uniform in [dt_min, dt_max], so channels start with time scales
        from 10 to 1000 steps; its weight is uniform with std dt_rank^-0.5 * dt_scale. A_log: S4D-real,
        A[d, n] = -(n + 1). D = 1.
        """
        with torch.no_grad():
            std = self.dt_rank**-0.5 * self.dt_scale
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            lo, hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(self.d_inner) * (hi - lo) + lo).clamp(min=self.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            n = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            self.A_log.copy_(torch.log(n).expand(self.d_inner, -1))
            self.D.fill_(1.0)

    def state_size(self, seq_len: int) -> int:
        # The SSM state, d_state numbers per channel, and the conv's last d_conv - 1 inputs per channel;
        # neither grows with the sequence.
        return self.d_inner * self.d_state + self.d_inner * (self.d_conv - 1)

    def init_cache(self, batch: int, max_len: int, device, dtype) -> MambaCache:
        # max_len is part of the mixer contract; a fixed-size state does not need it.
        return MambaCache(batch, self.d_inner, self.d_conv, self.d_state, device, dtype)

    def forward(self, x: torch.Tensor, ctx: SeqContext | None = None, cache: MambaCache | None = None) -> torch.Tensor:
        if getattr(ctx, "key_mask", None) is not None:  # an encoder-only model would silently get causal mixing
            raise NotImplementedError("Mamba is causal only; ctx.key_mask is not supported")
        batch, L, _ = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_inner) each
        # The causal conv sees d_conv - 1 inputs before the first: zeros, or the cache's saved ones.
        past = u.new_zeros(batch, self.d_inner, self.d_conv - 1) if cache is None else cache.conv.to(u.dtype)
        u = torch.cat([past, u.transpose(1, 2)], dim=2)  # (B, d_inner, d_conv - 1 + L)
        if cache is not None:
            cache.conv.copy_(u[:, :, u.shape[2] - (self.d_conv - 1):])
        u = F.silu(self.conv1d(u)).transpose(1, 2)  # (B, L, d_inner)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, d_inner), > 0
        A = -torch.exp(self.A_log)  # (d_inner, d_state), < 0: every state decays
        h0 = cache.ssm if cache is not None and cache.length > 0 else None
        y, h = self._scan(u, delta, A, B, C, z, h0, return_state=cache is not None)
        if cache is not None:
            cache.ssm.copy_(h)
            cache.length += L
        return self.out_proj(y)  # (B, L, d_model)

    def _scan(self, u, delta, A, B, C, z, h0, return_state: bool):
        kind = self.scan
        if kind == "auto":
            fast_gpu = u.is_cuda and u.dtype != torch.float64 and _cuda_scan_fn() is not None
            kind = "cuda" if fast_gpu else "chunked"
        if kind == "cuda" and h0 is not None:  # the kernel cannot start from a saved state: decoding steps
            kind = "chunked"
        if kind == "cuda":
            out = selective_scan_cuda(u, delta, A, B, C, self.D, z, return_state=return_state)
        elif kind == "sequential":
            out = selective_scan_reference(u, delta, A, B, C, self.D, z, h0=h0, return_state=return_state)
        else:
            out = selective_scan_chunked(u, delta, A, B, C, self.D, z, h0=h0, return_state=return_state,
                                         chunk_size=self.chunk_size)
        return out if return_state else (out, None)


class MambaSettings(Config):
    """model.mamba: the sizes of a Mamba layer."""

    d_state: PositiveInt = 16  # state size per channel
    d_conv: PositiveInt = 4  # causal convolution width
    expand: PositiveInt = 2  # inner width / d_model


@mixer("mamba", "Mamba-1 selective state space model (Gu & Dao 2023), chunked scan on CPU, mamba-ssm's kernel on CUDA",
       MambaSettings)
def build_mamba(s: MambaSettings, block) -> Mamba:
    return Mamba(block.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand)
