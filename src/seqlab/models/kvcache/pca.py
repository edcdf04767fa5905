"""A fixed low-rank cache: keys and values projected on a layer's top principal directions.

The control beside Lexico: both store a few numbers per vector over a basis shared by every request,
but PCA's r directions are the same for every vector, where OMP picks each vector's own atoms from an
overcomplete dictionary. Coefficients are kept in 16 bits; the newest `buffer` tokens stay exact, as in
Lexico, so the two differ only in how older tokens are coded.

Attention needs no rebuilt keys: q·(μ + cB) = q·μ + c·(Bq), and Σ_t p_t (μ + c_t B) = (Σ_t p_t) μ + (p c) B.
"""

from __future__ import annotations

import torch

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.base import EXACT_DTYPE, Cache


class PCACache(Cache):
    def __init__(self, batch: int, n_heads: int, head_dim: int, key_basis: tuple[torch.Tensor, torch.Tensor],
                 value_basis: tuple[torch.Tensor, torch.Tensor], buffer: int = 8):
        super().__init__(batch, n_heads, head_dim)
        (mk, bk), (mv, bv) = key_basis, value_basis
        if bk.shape[1] != head_dim or bv.shape[1] != head_dim or bk.shape[0] < 1 or bv.shape[0] < 1:
            raise BadInput(f"a PCA basis is (rank >= 1, {head_dim}); got {tuple(bk.shape)} and {tuple(bv.shape)}")
        if buffer < 0:
            raise BadInput(f"the exact buffer holds >= 0 tokens, got {buffer}")
        self.mean_k, self.basis_k = mk.to(EXACT_DTYPE), bk.to(EXACT_DTYPE)  # shared by every request
        self.mean_v, self.basis_v = mv.to(EXACT_DTYPE), bv.to(EXACT_DTYPE)
        self.buffer = buffer
        self.c_k = torch.zeros(batch, n_heads, 0, bk.shape[0], dtype=EXACT_DTYPE)
        self.c_v = torch.zeros(batch, n_heads, 0, bv.shape[0], dtype=EXACT_DTYPE)
        self.k_buf = torch.zeros(batch, n_heads, 0, head_dim, dtype=EXACT_DTYPE)
        self.v_buf = torch.zeros_like(self.k_buf)

    def _code(self, x, mean, basis):
        return ((x.float() - mean.float()) @ basis.float().T).to(EXACT_DTYPE)

    def store(self, k, v):
        self.k_buf = torch.cat([self.k_buf.to(k.device), k.to(EXACT_DTYPE)], 2)
        self.v_buf = torch.cat([self.v_buf.to(v.device), v.to(EXACT_DTYPE)], 2)
        n = self.k_buf.shape[2] - self.buffer
        if n > 0:
            old_k, old_v = self.k_buf[:, :, :n], self.v_buf[:, :, :n]
            self.c_k = torch.cat([self.c_k.to(k.device), self._code(old_k, self.mean_k, self.basis_k)], 2)
            self.c_v = torch.cat([self.c_v.to(v.device), self._code(old_v, self.mean_v, self.basis_v)], 2)
            self.k_buf, self.v_buf = self.k_buf[:, :, n:], self.v_buf[:, :, n:]

    def past_logits(self, q):
        qf = q.float()
        coded = self.c_k.float() @ (qf @ self.basis_k.float().T).transpose(-1, -2)  # (B, H, Tc, Lq)
        coded = coded.transpose(-1, -2) + (qf @ self.mean_k.float())[..., None]
        exact = qf @ self.k_buf.float().transpose(-1, -2)
        return (torch.cat([coded, exact], -1) * self.scale).to(q.dtype)

    def past_mix(self, p):
        Tc = self.c_v.shape[2]
        pc = p[..., :Tc].float()
        coded = (pc @ self.c_v.float()) @ self.basis_v.float() + pc.sum(-1, keepdim=True) * self.mean_v.float()
        return (coded + p[..., Tc:].float() @ self.v_buf.float()).to(p.dtype)

    def stored(self):
        return {"k_coefs": self.c_k, "v_coefs": self.c_v, "k_buffer": self.k_buf, "v_buffer": self.v_buf}

    def shared(self):
        return {"key_mean": self.mean_k, "key_basis": self.basis_k, "value_mean": self.mean_v, "value_basis": self.basis_v}

    def dense(self):
        k = self.c_k.float() @ self.basis_k.float() + self.mean_k.float()
        v = self.c_v.float() @ self.basis_v.float() + self.mean_v.float()
        return torch.cat([k, self.k_buf.float()], 2), torch.cat([v, self.v_buf.float()], 2)
