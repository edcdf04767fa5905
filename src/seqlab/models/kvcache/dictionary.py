"""Dictionaries for Lexico: learned as Lexico learns them, and the controls beside them.

Lexico's training (its dictionary_learning/model.py): codes from OMP without gradient, the mean squared
error of the reconstruction as the loss, Adam on the atoms with a cosine schedule, and after each
backward pass the gradient's component along each atom removed (the tangent of the unit sphere) and
the atoms renormalised, so they stay unit vectors. Atoms start from Kaiming-uniform noise, normalised.

Controls: `random_dictionary` (unit-norm Gaussian atoms, never trained) and `pca_basis` (the top
principal directions of the vectors: coding over an orthonormal basis with s atoms is a projection on
the s directions OMP picks per vector; PCA's fixed top-r projection is the classic fixed-subspace
compression it is compared with at the same bytes).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from seqlab.models.kvcache.omp import omp, reconstruct


def normalised(atoms: torch.Tensor) -> torch.Tensor:
    return atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)


def random_dictionary(n_atoms: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalised(torch.randn(n_atoms, dim, generator=g))


def relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over vectors of ||x - x_hat|| / ||x|| (Lexico's relative reconstruction error)."""
    return float(((x - x_hat).norm(dim=1) / x.norm(dim=1).clamp_min(1e-8)).mean())


def coding_error(x: torch.Tensor, dictionary: torch.Tensor, sparsity: int) -> float:
    """The relative error of x coded by OMP over the dictionary with `sparsity` atoms."""
    idx, coef, _ = omp(x.float(), dictionary.float(), sparsity)
    return relative_error(x.float(), reconstruct(idx, coef, dictionary.float()))


def train_dictionary(vectors: torch.Tensor, n_atoms: int, sparsity: int, steps: int = 500, batch: int = 1024,
                     lr: float = 1e-3, seed: int = 0, progress: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """A dictionary (n_atoms, d) of unit atoms for vectors (M, d), by Lexico's projected Adam."""
    g = torch.Generator().manual_seed(seed)
    x_all = vectors.float()
    M, d = x_all.shape
    atoms = torch.empty(n_atoms, d)
    torch.nn.init.kaiming_uniform_(atoms, a=math.sqrt(5), generator=g)
    atoms = torch.nn.Parameter(normalised(atoms))
    opt = torch.optim.Adam([atoms], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    for step in range(steps):
        x = x_all[torch.randint(0, M, (min(batch, M),), generator=g)]
        with torch.no_grad():
            idx, coef, _ = omp(x, atoms.detach(), sparsity)
        loss = ((reconstruct(idx, coef, atoms) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            unit = normalised(atoms)
            atoms.grad -= (atoms.grad * unit).sum(1, keepdim=True) * unit  # tangent to the sphere
            atoms.copy_(unit)
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, float(loss))
    with torch.no_grad():
        return normalised(atoms.detach())


def pca_basis(vectors: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), basis (rank, d)): the top principal directions of the vectors, orthonormal rows."""
    x = vectors.float()
    mean = x.mean(0)
    _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:rank]
