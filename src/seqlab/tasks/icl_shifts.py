"""Out-of-distribution prompts for the in-context function classes (Garg et al. 2022, section 4 and
`build_evals` in their code): a model trained on one prompt distribution is tested on another.

A shift acts on one of three things:

- the input distribution of every point (``skewed``, ``half-subspace``, ``scale-x=S``): each x becomes
  ``x @ T`` for a fixed d x d matrix T, drawn once per seed and shared by every prompt, as Garg et al.
  draw it once per evaluation;
- the query only (``random-quadrants``, ``orthogonal``, ``overlapping``): the first n_points - 1 points
  are the context and the last one is the query. Garg et al. score position i of a prompt whose first
  i points come from the context distribution and whose point i comes from the query distribution;
  here that is the last point of a prompt of i + 1 points, so error against context size is traced
  by varying `n_points`;
- the outputs (``scale-y=S``, ``noisy-y``).

The settings, with Garg et al.'s parameters:

- ``skewed``: T = U diag(lambda) U^T * sqrt(d / sum(lambda^2)), lambda_j = 1 / j (j = 1..d), U a random
  orthogonal matrix: a skewed covariance with the same expected squared norm, E|x|^2 = d.
- ``half-subspace``: the same with lambda = 1 on d // 2 directions and 0 on the rest: x lies in a random
  subspace of dimension d // 2, scaled by sqrt(d / (d // 2)) so that E|x|^2 = d.
- ``scale-x=S``: x -> S x (Garg et al. use S in 0.333, 0.5, 2, 3).
- ``scale-y=S``: y -> S y, the function's output scaled (the same factors).
- ``random-quadrants``: every context x is |x| * s for one random sign vector s per prompt (the context
  lies in one orthant); the query is an ordinary x.
- ``orthogonal``: the query is its own x with its projection on the span of the context xs removed,
  rescaled to its original norm. Once the context spans every active coordinate nothing is left, and
  the query is the zero vector, as in Garg et al.'s code.
- ``overlapping``: the query is a copy of a context x chosen uniformly at random.
- ``noisy-y``: y -> (y + e) * sqrt(V / (V + 1)), e ~ N(0, 1) per point, V the family's `error_scale`
  (the expected y^2 without noise). Garg et al.'s noisy evaluation adds unit noise and rescales the batch
  by its empirical standard deviation back to the noiseless scale; the expected value is used here so
  that each prompt stays a pure function of its index.

Input shifts need Gaussian inputs (not the {-1, +1} inputs of sparse parity), and output shifts need
real-valued outputs (not +-1 labels); each family states which apply through `FunctionClass.shifts()`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from seqlab.core.errors import BadInput
from seqlab.core.registry import unknown_name

GARG_SCALES = ("0.333", "0.5", "2", "3")
SHIFTS: tuple[str, ...] = (
    "skewed", "half-subspace",
    *(f"scale-x={s}" for s in GARG_SCALES), *(f"scale-y={s}" for s in GARG_SCALES),
    "random-quadrants", "orthogonal", "overlapping", "noisy-y",
)
# Garg et al.'s noisy linear regression evaluation: unit noise on y, then the noiseless scale restored.
NOISY_Y_STD = 1.0


@dataclass(frozen=True)
class Shift:
    """A parsed shift name. `acts_on` says which part of a prompt it changes."""

    name: str
    acts_on: Literal["inputs", "query", "outputs"]
    factor: float = 1.0

    @property
    def needs_gaussian_inputs(self) -> bool:
        # A copy of a context point is still a valid input for any family; the others change x's law.
        return self.acts_on == "inputs" or self.name in ("random-quadrants", "orthogonal")


def parse_shift(text: str) -> Shift:
    """The Shift named `text`: one of SHIFTS, or scale-x=S / scale-y=S with any positive S."""
    if text in ("skewed", "half-subspace"):
        return Shift(text, "inputs")
    if text in ("random-quadrants", "orthogonal", "overlapping"):
        return Shift(text, "query")
    if text == "noisy-y":
        return Shift(text, "outputs")
    for prefix, acts_on in (("scale-x", "inputs"), ("scale-y", "outputs")):
        if text == prefix or text.startswith(prefix + "="):
            raw = text[len(prefix) + 1:]
            try:
                factor = float(raw)
            except ValueError:
                factor = float("nan")
            if not np.isfinite(factor) or factor <= 0:
                raise BadInput(f"shift '{text}' needs a positive factor, as in {prefix}=2 "
                               f"(Garg et al. use {', '.join(GARG_SCALES)})")
            return Shift(text, acts_on, factor)
    raise BadInput(unknown_name("shift", text, SHIFTS))


def shift_matrix(name: str, seed: int, n_dims: int) -> np.ndarray | None:
    """The d x d matrix T of an input shift (x -> x @ T) for this seed; None for the other shifts."""
    shift = parse_shift(name)
    if shift.acts_on != "inputs":
        return None
    if shift.name.startswith("scale-x"):
        return np.eye(n_dims) * shift.factor  # Garg's U (S I) U^T is S I
    return _random_spectrum_matrix(shift.name, seed, n_dims)


@functools.lru_cache(maxsize=64)
def _random_spectrum_matrix(name: str, seed: int, n_dims: int) -> np.ndarray:
    if name == "skewed":
        spectrum = 1.0 / np.arange(1, n_dims + 1)
    else:  # half-subspace
        spectrum = np.zeros(n_dims)
        spectrum[: n_dims // 2] = 1.0
    if not spectrum.any():
        raise BadInput(f"shift '{name}' needs n_dims >= 2 (it keeps a subspace of dimension n_dims // 2)")
    # One matrix per (seed, shift, d), whatever the family or split: Garg et al. draw it once per evaluation.
    digest = hashlib.blake2b(f"shift|{name}|{seed}|{n_dims}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "big"))
    u, _, _ = np.linalg.svd(rng.standard_normal((n_dims, n_dims)))
    t = (u * spectrum) @ u.T * np.sqrt(n_dims / np.sum(spectrum**2))
    t.setflags(write=False)
    return t


def shift_query(shift: Shift, xs: np.ndarray, rng_at: Callable[[int], np.random.Generator], active: int) -> np.ndarray:
    """A query shift applied to a batch xs (n, n_points, d), float64: context rows [:-1], query row [-1].
    `rng_at(j)` is prompt j's own generator for the shift's random choices (used before the next call)."""
    n, n_points, _ = xs.shape
    n_context = n_points - 1
    if n_context == 0:
        return xs  # a prompt with no context: its query is an ordinary point
    out = xs.copy()
    if shift.name == "random-quadrants":
        signs = np.stack([rng_at(j).integers(0, 2, xs.shape[2]) * 2.0 - 1.0 for j in range(n)])  # (n, d)
        out[:, :-1] = np.abs(xs[:, :-1]) * signs[:, None, :]
    elif shift.name == "overlapping":
        pick = np.array([rng_at(j).integers(0, n_context) for j in range(n)])
        out[:, -1] = xs[np.arange(n), pick]
    elif shift.name == "orthogonal":
        query = xs[:, -1]
        if n_context >= active:
            out[:, -1] = 0.0  # the context spans every active coordinate: nothing is orthogonal to it
        else:
            basis, _ = np.linalg.qr(np.swapaxes(xs[:, :-1], 1, 2))  # (n, d, n_context), orthonormal columns
            residual = query - np.einsum("ndk,nk->nd", basis, np.einsum("ndk,nd->nk", basis, query))
            norm = np.linalg.norm(residual, axis=1, keepdims=True)
            out[:, -1] = residual * (np.linalg.norm(query, axis=1, keepdims=True) / np.where(norm > 0, norm, 1.0))
    else:
        raise ValueError(f"not a query shift: {shift.name}")
    return out
