"""Lexico (Kim, Park, Cho, Papailiopoulos, ICML 2025): keys and values as sparse codes over a dictionary.

Each layer has a key dictionary and a value dictionary (N unit-norm atoms of the head dimension), learned
once and shared by every head and every request. A key or value vector is stored as at most `sparsity`
(coefficient, atom index) pairs found by OMP; the newest `buffer` tokens stay exact (16-bit), as in
Lexico's cache, and older ones are compressed `chunk` at a time as they leave the buffer (the prefill
compresses all but the newest `buffer`).

What is stored, per compressed vector: its coefficients in float8 e4m3 and its atom indices in int16 (or
bit-packed at ⌈log2 N⌉ bits with `packed_indices`); with `rel_tol` vectors use different numbers of
atoms, so int32 row pointers are stored too (Lexico's CSR layout). Rows are kept token-major
(token, batch, head), so compressing more tokens appends rows.

Attention never rebuilds the keys: q·k = Σ_j c_j (q·D[a_j]), so `past_logits` computes q·D once per
query (N products) and gathers. Values are mixed on the atoms: Σ_t p_t Σ_j c_tj D[a_tj] =
(Σ over the (t, j) on each atom of p_t c_tj) · D, a scatter-add then one (N, hd) product. `dense()`
rebuilds keys and values for the reference path (densify, then ordinary attention).
"""

from __future__ import annotations

import torch

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.base import EXACT_DTYPE, Cache
from seqlab.models.kvcache.bitpack import bits_for, pack, unpack
from seqlab.models.kvcache.omp import omp

COEF_DTYPE = torch.float8_e4m3fn
COEF_MAX = 448.0  # e4m3fn's largest finite value: it has no infinity, so a larger number would become NaN


class SparseRows:
    """Sparse codes of rows appended over time: coefficients, atom indices and (if counts vary) row pointers."""

    def __init__(self, n_atoms: int, sparsity: int, variable: bool, packed: bool, device=None):
        self.n_atoms, self.sparsity, self.variable, self.packed = n_atoms, sparsity, variable, packed
        self.bits = bits_for(n_atoms) if packed else None
        index_dtype = torch.int16 if n_atoms <= 1 << 15 else torch.int32
        self.coefs = torch.zeros(0, dtype=COEF_DTYPE, device=device)
        self.indices = torch.zeros(0, dtype=torch.uint8 if packed else index_dtype, device=device)
        self.rowptr = torch.zeros(1, dtype=torch.int32, device=device) if variable else None
        self.n_rows = self.nnz = 0

    def append(self, indices: torch.Tensor, coefs: torch.Tensor, counts: torch.Tensor) -> None:
        """Rows from omp(): (R, s) indices and coefficients, the first counts[r] of each row used."""
        used = torch.arange(indices.shape[1], device=indices.device)[None] < counts[:, None]
        idx, c = indices[used], coefs[used].clamp(-COEF_MAX, COEF_MAX)
        if not self.variable and int(counts.min()) < indices.shape[1]:
            raise ValueError("fixed-sparsity rows must use every slot")
        self.coefs = torch.cat([self.coefs, c.to(COEF_DTYPE)])
        if self.packed:
            self.indices = pack(torch.cat([unpack(self.indices, self.bits, self.nnz), idx]), self.bits)
        else:
            self.indices = torch.cat([self.indices, idx.to(self.indices.dtype)])
        if self.variable:
            ends = self.rowptr[-1] + counts.cumsum(0).to(torch.int32)
            self.rowptr = torch.cat([self.rowptr, ends])
        self.n_rows += indices.shape[0]
        self.nnz += int(idx.numel())

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_rows, sparsity) long indices and float32 coefficients; unused slots hold atom 0, coefficient 0."""
        s = self.sparsity
        flat_idx = unpack(self.indices, self.bits, self.nnz) if self.packed else self.indices.long()
        flat_coef = self.coefs.float()
        if not self.variable:
            return flat_idx.view(self.n_rows, s), flat_coef.view(self.n_rows, s)
        counts = (self.rowptr[1:] - self.rowptr[:-1]).long()
        slot = torch.arange(s, device=counts.device)[None]
        used = slot < counts[:, None]
        idx = torch.zeros(self.n_rows, s, dtype=torch.long, device=counts.device)
        coef = torch.zeros(self.n_rows, s, dtype=torch.float32, device=counts.device)
        idx[used], coef[used] = flat_idx, flat_coef
        return idx, coef

    def stored(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}_coefs": self.coefs, f"{prefix}_indices": self.indices}
        if self.rowptr is not None:
            out[f"{prefix}_rowptr"] = self.rowptr
        return out


class LexicoCache(Cache):
    def __init__(self, batch: int, n_heads: int, head_dim: int, dict_k: torch.Tensor, dict_v: torch.Tensor,
                 sparsity: int, buffer: int = 8, chunk: int = 1, rel_tol: float | None = None,
                 packed_indices: bool = False):
        super().__init__(batch, n_heads, head_dim)
        for name, d in (("key", dict_k), ("value", dict_v)):
            if d.ndim != 2 or d.shape[1] != head_dim:
                raise BadInput(f"the {name} dictionary must be (atoms, {head_dim}); got {tuple(d.shape)}")
        if sparsity < 1 or buffer < 0 or chunk < 1:
            raise BadInput(f"lexico needs sparsity >= 1, buffer >= 0 and chunk >= 1 (got {sparsity}, {buffer}, {chunk})")
        if rel_tol is not None and not 0 <= rel_tol < 1:
            raise BadInput(f"lexico's rel_tol is a relative error in [0, 1), got {rel_tol}")
        self.dict_k, self.dict_v = dict_k.to(EXACT_DTYPE), dict_v.to(EXACT_DTYPE)  # shared, 16-bit
        self.sparsity, self.buffer, self.chunk, self.rel_tol = sparsity, buffer, chunk, rel_tol
        variable = rel_tol is not None
        self.codes_k = SparseRows(dict_k.shape[0], sparsity, variable, packed_indices, dict_k.device)
        self.codes_v = SparseRows(dict_v.shape[0], sparsity, variable, packed_indices, dict_v.device)
        self.k_buf = torch.zeros(batch, n_heads, 0, head_dim, dtype=EXACT_DTYPE, device=dict_k.device)
        self.v_buf = torch.zeros_like(self.k_buf)
        self.n_compressed = 0  # tokens held as codes, the oldest ones

    # -- storing ---------------------------------------------------------------------------------------
    def _compress(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Code tokens (B, H, t, hd), appended token-major after the codes already held."""
        B, H, t, hd = k.shape
        for x, rows, dictionary in ((k, self.codes_k, self.dict_k), (v, self.codes_v, self.dict_v)):
            flat = x.permute(2, 0, 1, 3).reshape(t * B * H, hd).float()
            rows.append(*omp(flat, dictionary.float(), self.sparsity, self.rel_tol))
        self.n_compressed += t

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_buf = torch.cat([self.k_buf, k.to(EXACT_DTYPE)], 2)
        self.v_buf = torch.cat([self.v_buf, v.to(EXACT_DTYPE)], 2)
        while self.k_buf.shape[2] >= self.buffer + self.chunk:
            n = self.chunk
            self._compress(self.k_buf[:, :, :n].float(), self.v_buf[:, :, :n].float())
            self.k_buf, self.v_buf = self.k_buf[:, :, n:], self.v_buf[:, :, n:]

    def prefill(self, q, k, v) -> None:
        n = max(k.shape[2] - self.buffer, 0)
        if n:
            self._compress(k[:, :, :n], v[:, :, :n])
        self.k_buf = torch.cat([self.k_buf, k[:, :, n:].to(EXACT_DTYPE)], 2)
        self.v_buf = torch.cat([self.v_buf, v[:, :, n:].to(EXACT_DTYPE)], 2)

    # -- attending -------------------------------------------------------------------------------------
    def _codes(self, rows: SparseRows) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, Tc * s) indices and coefficients, token-major within each (batch, head)."""
        idx, coef = rows.padded()
        shape = (self.n_compressed, self.batch, self.n_heads, self.sparsity)
        return tuple(t.view(shape).permute(1, 2, 0, 3).reshape(self.batch, self.n_heads, -1) for t in (idx, coef))

    def past_logits(self, q: torch.Tensor) -> torch.Tensor:
        B, H, Lq, _ = q.shape
        exact = (q @ self.k_buf.to(q.dtype).transpose(-1, -2)) * self.scale
        if not self.n_compressed:
            return exact
        idx, coef = self._codes(self.codes_k)
        q_atoms = q.float() @ self.dict_k.float().T  # (B, H, Lq, N): q·D once per query
        picked = q_atoms.gather(-1, idx[:, :, None].expand(B, H, Lq, idx.shape[-1]))
        coded = (picked * coef[:, :, None]).view(B, H, Lq, self.n_compressed, self.sparsity).sum(-1)
        return torch.cat([(coded * self.scale).to(q.dtype), exact], -1)

    def past_mix(self, p: torch.Tensor) -> torch.Tensor:
        B, H, Lq, _ = p.shape
        Tc = self.n_compressed
        out = p[..., Tc:] @ self.v_buf.to(p.dtype)
        if not Tc:
            return out
        idx, coef = self._codes(self.codes_v)
        weights = p[..., :Tc].float().repeat_interleave(self.sparsity, -1) * coef[:, :, None]  # (B, H, Lq, Tc * s)
        on_atoms = torch.zeros(B, H, Lq, self.dict_v.shape[0], dtype=torch.float32, device=p.device)
        on_atoms.scatter_add_(-1, idx[:, :, None].expand(B, H, Lq, idx.shape[-1]), weights)
        return out + (on_atoms @ self.dict_v.float()).to(p.dtype)

    # -- what is kept ----------------------------------------------------------------------------------
    def stored(self) -> dict[str, torch.Tensor]:
        return {**self.codes_k.stored("k"), **self.codes_v.stored("v"), "k_buffer": self.k_buf, "v_buffer": self.v_buf}

    def shared(self) -> dict[str, torch.Tensor]:
        return {"key_dictionary": self.dict_k, "value_dictionary": self.dict_v}

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, T, hd) rebuilt from the codes, then the exact buffer: the reference."""
        parts = []
        for rows, dictionary, buf in ((self.codes_k, self.dict_k, self.k_buf), (self.codes_v, self.dict_v, self.v_buf)):
            idx, coef = rows.padded()
            x = (coef[:, :, None] * dictionary.float()[idx]).sum(1)  # (Tc * B * H, hd)
            x = x.view(self.n_compressed, self.batch, self.n_heads, self.head_dim).permute(1, 2, 0, 3)
            parts.append(torch.cat([x, buf.float()], 2))
        return parts[0], parts[1]
