"""The contract of an in-context function class (Garg et al. 2022): a prompt is (x_1, f(x_1), ...,
x_k, f(x_k)) for one function f drawn from the class, and a model must predict f(x_i) from the points
before it.

Prompt j of `prompts(seed, split, start, n, ...)` is a pure function of (config, seed, split, start + j,
n_points, active_dims, shift). Its random draws come from PCG64 generators whose 128-bit state and
increment are a hash (blake2b) of (family, seed, split, stream, index), so every prompt has its own
streams whatever batch it is made in, and the train and test streams are unrelated. Streams:

- FUNCTION: the function f (w, a tree, a network, the secret coordinates of a parity);
- INPUTS: the xs, row by row, so a prompt of k points is the first k points of a longer one;
- NOISE: per-point output noise of a noisy family, also one value per row;
- SHIFT_CHOICE, SHIFT_NOISE: the random choices and output noise of an out-of-distribution shift.

Because the shifts draw from streams of their own, a shifted prompt has the same function and the same
underlying xs as the unshifted prompt of the same index: the two can be compared pair by pair.

The train/test split. A prompt's canonical problem is what a model reads, its xs and ys (`problem_key`;
nothing, where no point is scored). Gaussian inputs make that space continuous: two independent draws
never share a prompt (with probability one), so the train and test streams are independent draws. Inputs
in {-1, +1}^d (sparse parity) repeat, and there the split goes by the prompt's first x as drawn, which a
prompt shares with every prompt of which it is a prefix and with itself under every curriculum stage and
shift: prompt i keeps the INPUTS stream whose first row hashes to its split (redrawing from the streams
"INPUTS.1", "INPUTS.2", ...; the function is left as drawn), and where there are at most SMALL_SPACE sign
vectors they are ranked by hash, so the test split always has one. Train and test prompts then differ in
their first x, at every n_points; under the curriculum (active_dims < n_dims) the first x a model sees is
cut short, and two prompts equal there may come from different splits.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import Field

from seqlab.core.configs import parse_config
from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry
from seqlab.tasks.base import MAX_TRIES, SMALL_SPACE, SPLITS, TEST_SHARE, KnobConfig, in_test_split, split_hash
from seqlab.tasks.icl_shifts import NOISY_Y_STD, SHIFTS, Shift, parse_shift, shift_matrix, shift_query

FUNCTION, INPUTS, NOISE, SHIFT_CHOICE, SHIFT_NOISE = range(5)


@dataclass(frozen=True, eq=False)  # arrays do not compare to one bool: compare p.xs and p.ys instead
class Prompts:
    """A batch of prompts: xs float32 (n, n_points, n_dims) and ys float32 (n, n_points), ys[j, i] = f_j(xs[j, i])."""

    xs: np.ndarray
    ys: np.ndarray

    def __len__(self) -> int:
        return len(self.xs)


class FunctionConfig(KnobConfig):
    """Knobs shared by every function class: the input dimension and the number of points in a prompt."""

    n_dims: int = Field(20, ge=1)
    n_points: int = Field(41, ge=1)


class _Streams:
    """Prompt `index`'s stream `stream`: one PCG64 generator with its state and increment set from a hash of
    (family, seed, split, stream, index), much as seeding through numpy's SeedSequence hashes its entropy
    into them. Setting the state of one generator measured a sixth of the cost of a new seeded one (4 vs
    25 microseconds on a loaded 2-core machine), which matters: a batch needs two generators per prompt."""

    def __init__(self, name: str, seed: int, split: str):
        self._prefix = hashlib.blake2b(f"{name}|{seed}|{split}|".encode(), digest_size=32)
        self._bits = np.random.PCG64(0)  # every state is set before use
        self._gen = np.random.Generator(self._bits)

    def at(self, index: int, stream: int) -> np.random.Generator:
        h = self._prefix.copy()
        h.update(f"{stream}|{index}".encode())
        digest = h.digest()
        self._bits.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(digest[:16], "little"), "inc": int.from_bytes(digest[16:], "little") | 1},
            "has_uint32": 0, "uinteger": 0,
        }
        return self._gen


class FunctionClass:
    """Base class of the in-context function classes. Subclasses set `name`, `Config` and `kind` and
    implement `draw` (one function) and `evaluate` (a batch of functions on a batch of xs)."""

    name: ClassVar[str]
    Config: ClassVar[type[FunctionConfig]] = FunctionConfig
    kind: ClassVar[Literal["regression", "classification"]] = "regression"
    # "gaussian": x ~ N(0, I_d) (Garg et al.); "signs": x uniform in {-1, +1}^d (sparse parity).
    inputs: ClassVar[Literal["gaussian", "signs"]] = "gaussian"
    # Per-point randomness in y given f(x): None, "normal" (N(0, 1)) or "uniform" (U(0, 1)).
    point_noise: ClassVar[Literal["normal", "uniform"] | None] = None

    def __init__(self, config: FunctionConfig | None = None):
        self.config = config if config is not None else self.Config()

    # -- what subclasses provide -------------------------------------------------------------
    def draw(self, rng: np.random.Generator, active: int) -> dict[str, np.ndarray]:
        """One function of the class; `active` coordinates of x are nonzero (Garg's curriculum)."""
        raise NotImplementedError

    def evaluate(self, fn: dict[str, np.ndarray], xs: np.ndarray) -> np.ndarray:
        """f_j(xs[j, i]) for a batch: `fn` holds `draw`'s arrays stacked on a leading axis of n,
        xs is float64 (n, n_points, d); returns float64 (n, n_points), before any point noise."""
        raise NotImplementedError

    def observe(self, clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The ys given the noiseless values and one `point_noise` draw per point."""
        return clean

    @property
    def error_scale(self) -> float:
        """The normaliser of squared error: E[y^2] under the training distribution, which is also the
        error of always predicting 0 (Garg et al.'s plots divide by it: n_dims for linear regression)."""
        return float(self.config.n_dims)

    @property
    def min_active(self) -> int:
        return 1

    # -- the split ------------------------------------------------------------------------------------
    @staticmethod
    def problem_key(xs: np.ndarray, ys: np.ndarray, scored: np.ndarray | None = None) -> bytes | None:
        """The canonical problem of one prompt, xs (n_points, d) and ys (n_points,): what a model reads; None
        where no point is scored (an all-outlier prompt asks nothing)."""
        if scored is not None and not np.any(scored):
            return None
        return np.ascontiguousarray(xs, dtype=np.float32).tobytes() + np.ascontiguousarray(ys, dtype=np.float32).tobytes()

    def _first_x_in_test(self, seed: int, x: np.ndarray) -> bool:
        d = self.config.n_dims
        if 2**d > SMALL_SPACE:
            return in_test_split(seed, x.tobytes())
        cache = self.__dict__.setdefault("_split_cache", {})
        if seed not in cache:  # every sign vector, ranked: the TEST_SHARE with the lowest hashes (one at least)
            signs = [np.array(v, dtype=np.float32) for v in itertools.product((-1.0, 1.0), repeat=d)]
            ranked = sorted(signs, key=lambda v: split_hash(seed, v.tobytes()))
            cache[seed] = {v.tobytes() for v in ranked[: max(1, round(len(signs) * TEST_SHARE))]}
        return x.tobytes() in cache[seed]

    def _inputs_at(self, streams: "_Streams", seed: int, split: str, i: int) -> np.random.Generator:
        """Prompt i's INPUTS stream: the first one whose first x belongs to the split, where inputs repeat."""
        if self.inputs == "gaussian":
            return streams.at(i, INPUTS)
        first = np.empty((1, self.config.n_dims), dtype=np.float32)
        for attempt in range(MAX_TRIES):
            stream = INPUTS if attempt == 0 else f"{INPUTS}.{attempt}"
            self._draw_inputs(streams.at(i, stream), first)
            if self._first_x_in_test(seed, first[0]) == (split == "test"):
                return streams.at(i, stream)
        raise BadInput(f"{self.name}: no first x of the {split} split in {MAX_TRIES} draws")  # ranking rules it out

    # -- shared machinery ----------------------------------------------------------------------
    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0]

    def shifts(self) -> tuple[str, ...]:
        """The names in SHIFTS that this family accepts."""
        return tuple(s for s in SHIFTS if self._shift_problem(parse_shift(s)) is None)

    def _shift_problem(self, shift: Shift) -> str | None:
        if shift.needs_gaussian_inputs and self.inputs != "gaussian":
            return f"{self.name} draws x uniformly from {{-1, +1}}^d, and shift '{shift.name}' would move x off it"
        if shift.acts_on == "outputs" and self.kind == "classification":
            return f"{self.name} outputs +-1 labels, and shift '{shift.name}' changes real-valued outputs"
        return None

    def _parse_shift(self, shift: str | None) -> Shift | None:
        if shift is None:
            return None
        parsed = parse_shift(shift)
        problem = self._shift_problem(parsed)
        if problem:
            raise BadInput(f"{problem} (shifts for {self.name}: {', '.join(self.shifts()) or 'none'})")
        return parsed

    def _check(self, seed: int, split: str, start: int, n: int, n_points: int | None,
               active_dims: int | None) -> tuple[int, int]:
        if split not in SPLITS:
            raise BadInput(f"unknown split '{split}' (use train or test)")
        if not isinstance(seed, (int, np.integer)):
            raise BadInput(f"seed must be an integer, got {seed!r}")
        if start < 0 or n < 0:
            raise BadInput(f"prompt indices start from 0 and n is a count, got start={start}, n={n}")
        n_points = self.config.n_points if n_points is None else n_points
        if n_points < 1:
            raise BadInput(f"n_points must be at least 1, got {n_points}")
        d = self.config.n_dims
        active = d if active_dims is None else active_dims
        if not self.min_active <= active <= d:
            raise BadInput(f"active_dims must lie in [{self.min_active}, n_dims={d}] for {self.name}, got {active}")
        return n_points, active

    def params(self, seed: int, split: str, i: int, *, n_points: int | None = None,
               active_dims: int | None = None, shift: str | None = None) -> dict[str, np.ndarray]:
        """The function drawn for prompt i. It depends on active_dims only (a sparse support or a parity's
        secret lies in the active coordinates), never on n_points; a shift leaves it as it is (scale-y and
        noisy-y transform the outputs afterwards)."""
        _, active = self._check(seed, split, i, 1, n_points, active_dims)
        self._parse_shift(shift)
        return self.draw(_Streams(self.name, seed, split).at(i, FUNCTION), active)

    def prompts(self, seed: int, split: str, start: int, n: int, *, n_points: int | None = None,
                active_dims: int | None = None, shift: str | None = None) -> Prompts:
        """Prompts start .. start + n - 1 of a split. `n_points` defaults to the config's; coordinates from
        `active_dims` on are zero in every x (Garg's curriculum); `shift` is one of SHIFTS (icl_shifts.py)."""
        n_points, active = self._check(seed, split, start, n, n_points, active_dims)
        parsed = self._parse_shift(shift)
        d = self.config.n_dims
        xs = np.empty((n, n_points, d), dtype=np.float32)
        if n == 0:
            return Prompts(xs, np.empty((0, n_points), dtype=np.float32))
        streams = _Streams(self.name, seed, split)
        indices = range(start, start + n)
        drawn = [self.draw(streams.at(i, FUNCTION), active) for i in indices]
        fn = {k: np.stack([f[k] for f in drawn]) for k in drawn[0]}
        for j, i in enumerate(indices):
            self._draw_inputs(self._inputs_at(streams, seed, split, i), xs[j])

        if parsed is not None and parsed.acts_on in ("inputs", "query"):
            xs = self._shift_inputs(parsed, xs, seed, active, lambda j: streams.at(start + j, SHIFT_CHOICE))
        elif active < d:
            xs[:, :, active:] = 0.0
        # f is evaluated on the float32 xs handed out, so ys are exactly f of what a model sees.
        ys = self.evaluate(fn, xs.astype(np.float64))
        if self.point_noise is not None:
            ys = self.observe(ys, self._point_draws(streams, indices, NOISE, n_points, self.point_noise))
        if parsed is not None and parsed.acts_on == "outputs":
            ys = self._shift_outputs(parsed, ys, streams, indices, n_points)
        return Prompts(xs, ys.astype(np.float32))

    @staticmethod
    def _shift_inputs(shift: Shift, xs: np.ndarray, seed: int, active: int,
                      rng_at: Callable[[int], np.random.Generator]) -> np.ndarray:
        """Garg's order: x @ T for an input shift, then the curriculum's zeroed coordinates, then a query shift."""
        x64 = xs.astype(np.float64)
        if shift.acts_on == "inputs":
            x64 = x64 @ shift_matrix(shift.name, seed, xs.shape[2])
        x64[:, :, active:] = 0.0
        if shift.acts_on == "query":
            x64 = shift_query(shift, x64, rng_at, active)
        return x64.astype(np.float32)

    def _draw_inputs(self, rng: np.random.Generator, out: np.ndarray) -> None:
        if self.inputs == "gaussian":
            rng.standard_normal(out.shape, dtype=np.float32, out=out)
        else:
            out[:] = np.where(rng.random(out.shape, dtype=np.float32) < 0.5, -1.0, 1.0)

    @staticmethod
    def _point_draws(streams: _Streams, indices: range, stream: int, n_points: int, law: str) -> np.ndarray:
        draw = (lambda g: g.standard_normal(n_points)) if law == "normal" else (lambda g: g.random(n_points))
        return np.stack([draw(streams.at(i, stream)) for i in indices])

    def _shift_outputs(self, shift: Shift, ys: np.ndarray, streams: _Streams, indices: range,
                       n_points: int) -> np.ndarray:
        if shift.name == "noisy-y":
            noise = self._point_draws(streams, indices, SHIFT_NOISE, n_points, "normal")
            v = self.error_scale
            return (ys + NOISY_Y_STD * noise) * np.sqrt(v / (v + NOISY_Y_STD**2))
        return ys * shift.factor  # scale-y

    # -- for `seqlab sample --json` ---------------------------------------------------------------
    def sample_record(self, seed: int, split: str, i: int, *, n_points: int | None = None,
                      active_dims: int | None = None, shift: str | None = None) -> dict[str, Any]:
        """Prompt i as {"task", "prompt", "target", "meta"}: the prompt reads "x_1 -> y_1; ...; x_k ->" with
        numbers rounded to 4 decimals, the target is y_k, and meta holds the exact xs, ys, the function
        and the answer (every y).

        The target is always a scored point: k is the last point a model is scored on ("target_point",
        0-based, in meta), which is the last point but in the families that skip some (outliers, the keys and
        values of vector-mqar), and the prompt stops there. Those families' meta also holds "scored" (a bool
        per point); where none is, the prompt writes every point with its y, the target is "" and
        target_point is None."""
        p = self.prompts(seed, split, i, 1, n_points=n_points, active_dims=active_dims, shift=shift)
        xs, ys = p.xs[0], p.ys[0]
        scored = getattr(p, "scored", None)
        marked = np.flatnonzero(scored[0]) if scored is not None else [len(ys) - 1]
        k = int(marked[-1]) if len(marked) else None
        fn = self.params(seed, split, i, active_dims=active_dims)
        shown = len(ys) if k is None else k
        points = [f"{_vector(x)} -> {_number(y)}" for x, y in zip(xs[:shown], ys[:shown])]
        meta = {
            "xs": xs.tolist(), "ys": ys.tolist(),
            "function": {name: v.tolist() for name, v in fn.items()},
            "answer": [float(y) for y in ys],
            "kind": self.kind, "n_dims": self.config.n_dims, "n_points": len(ys),
            "active_dims": self.config.n_dims if active_dims is None else active_dims, "shift": shift,
            "target_point": k,
        }
        if scored is not None:
            meta["scored"] = scored[0].tolist()
        return {
            "task": self.name,
            "prompt": "; ".join(points + ([] if k is None else [f"{_vector(xs[k])} ->"])),
            "target": "" if k is None else _number(ys[k]),
            "meta": meta,
        }


def _number(v: float) -> str:
    r = round(float(v), 4)
    return str(int(r)) if r.is_integer() else repr(r)


def _vector(x: np.ndarray) -> str:
    return "[" + ", ".join(_number(v) for v in x) + "]"


# -- registry ----------------------------------------------------------------------------------
FUNCTIONS: Registry[type[FunctionClass]] = Registry("function class")
register_function = FUNCTIONS.register


def function_class(name: str) -> type[FunctionClass]:
    return FUNCTIONS[FUNCTIONS.canonical(name)]


def get_function(name: str, **params: Any) -> FunctionClass:
    """A function class by name, its config built from keyword arguments (unknown keys name the nearest)."""
    cls = function_class(name)
    return cls(parse_config(cls.Config, params, prefix="task."))


def function_names() -> list[str]:
    return FUNCTIONS.names()
