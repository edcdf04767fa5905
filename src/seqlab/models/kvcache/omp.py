"""Orthogonal matching pursuit, batched over vectors, and a plain reference beside it.

OMP writes x ≈ Σ_j c_j D[a_j] with at most s atoms: at each step it adds the atom most correlated with
the residual, then refits every chosen coefficient by least squares, so the residual stays orthogonal
to the chosen atoms. With `rel_tol`, a vector stops as soon as ||residual|| <= rel_tol * ||x||
(Lexico's error threshold), so vectors use different numbers of atoms.

`omp` runs every vector at once (one (M, N) correlation and one batched k x k solve per step); `omp_reference`
is the textbook loop, one vector at a time in float64, for the parity test.
"""

from __future__ import annotations

import numpy as np
import torch


def omp(x: torch.Tensor, dictionary: torch.Tensor, sparsity: int, rel_tol: float | None = None):
    """Codes of x (M, d) over `dictionary` (N, d), whose rows are unit-norm atoms.

    Returns (indices (M, s) long, coefs (M, s), counts (M,) long): row m uses its first counts[m] atoms;
    the slots after them hold index 0 and coefficient 0.
    """
    M, d = x.shape
    s = min(sparsity, dictionary.shape[0])
    x = x.to(dictionary.dtype)
    indices = torch.zeros(M, s, dtype=torch.long, device=x.device)
    coefs = torch.zeros(M, s, dtype=x.dtype, device=x.device)
    counts = torch.full((M,), s, dtype=torch.long, device=x.device)
    residual = x.clone()
    norm = x.norm(dim=1)
    active = torch.ones(M, dtype=torch.bool, device=x.device)
    if rel_tol is not None:
        active = norm > 0  # a zero vector needs no atom
        counts[~active] = 0
    # A ridge of a few ulps keeps the solve finite if two chosen atoms are (nearly) parallel.
    eye = torch.eye(s, dtype=x.dtype, device=x.device) * (10 * torch.finfo(x.dtype).eps)
    for k in range(s):
        score = (residual @ dictionary.T).abs()  # (M, N)
        if k:
            score.scatter_(1, indices[:, :k], -1.0)  # a chosen atom is never chosen again
        indices[:, k] = score.argmax(1)
        atoms = dictionary[indices[:, : k + 1]]  # (M, k+1, d)
        gram = atoms @ atoms.transpose(1, 2) + eye[: k + 1, : k + 1]
        c = torch.linalg.solve(gram, (atoms @ x[:, :, None]))[..., 0]  # (M, k+1)
        fit = (c[:, None, :] @ atoms)[:, 0]
        coefs[active, : k + 1] = c[active]
        residual = torch.where(active[:, None], x - fit, residual)
        if rel_tol is not None:
            done = active & (residual.norm(dim=1) <= rel_tol * norm)
            counts[done] = k + 1
            active &= ~done
    slot = torch.arange(s, device=x.device)[None]
    unused = slot >= counts[:, None]
    return indices.masked_fill(unused, 0), coefs.masked_fill(unused, 0.0), counts


def omp_reference(x: np.ndarray, dictionary: np.ndarray, sparsity: int, rel_tol: float | None = None):
    """One vector at a time, float64: the same (indices, coefs, counts) as `omp`."""
    x, D = np.asarray(x, np.float64), np.asarray(dictionary, np.float64)
    s = min(sparsity, D.shape[0])
    M = x.shape[0]
    indices, coefs, counts = np.zeros((M, s), np.int64), np.zeros((M, s)), np.zeros(M, np.int64)
    for m in range(M):
        chosen: list[int] = []
        r, c = x[m].copy(), np.zeros(0)
        target = None if rel_tol is None else rel_tol * np.linalg.norm(x[m])
        while len(chosen) < s and not (target is not None and np.linalg.norm(r) <= target):
            corr = np.abs(D @ r)
            corr[chosen] = -1.0
            chosen.append(int(np.argmax(corr)))
            A = D[chosen]  # (k, d)
            c = np.linalg.lstsq(A.T, x[m], rcond=None)[0]
            r = x[m] - c @ A
        counts[m] = len(chosen)
        indices[m, : len(chosen)], coefs[m, : len(chosen)] = chosen, c
    return indices, coefs, counts


def reconstruct(indices: torch.Tensor, coefs: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
    """Σ_j coefs[:, j] D[indices[:, j]]: (M, d)."""
    return (coefs.to(dictionary.dtype)[:, :, None] * dictionary[indices]).sum(1)
