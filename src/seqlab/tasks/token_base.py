"""Token tasks: problems written directly as integer token ids, scored at chosen positions.

Some tasks do not fit the character formats of `Task`: multi-query associative recall (Arora et al.
2023) draws keys and values from a vocabulary of thousands of symbols and asks one question per query
in the same sequence; Triplet-Counting (Ewer et al. 2025) reads integers mod n. A `TokenTask`
writes a problem as

    tokens  (L,) ints in [0, vocab_size): what the model reads
    targets (L,) ints, IGNORE (-100) where nothing is scored: targets[t] is the token the model must
            predict after reading tokens[: t + 1], so a decoder's usual next-token loss applies as is

and `meta` (the problem's inputs and its "answer", as DESIGN.md asks of `seqlab sample`).

Example i of a split is a pure function of (config, seed, split, i): its NumPy generator's state is a
hash (blake2b) of (task, seed, split, i). The train and test splits never share a problem (`problem_key`):

- a setting whose problems hold at least INDEPENDENT_BITS bits of randomness (`problem_bits`; MQAR at its
  defaults has hundreds) draws the two streams independently: a shared problem is a 2**-64 chance per pair;
- a smaller one keeps a draw only where its problem's key hashes to the split asked for (redrawing from the
  streams (task, seed, split, i, t), t = 1, 2, ...), as the character tasks do, so each split is the
  task's distribution restricted to its own problems;
- a space small enough to list (`small_space`, `problem`), with every problem equally likely, is ranked by
  hash as the character tasks' small spaces are: the test split is never empty.

A setting whose space is too small for either is refused when its config is read, in one line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from seqlab.core.configs import parse_config
from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry
from seqlab.core.targets import IGNORE
from seqlab.tasks.base import (INDEPENDENT_BITS, MAX_TRIES, MIN_HASHED_PROBLEMS, SMALL_SPACE, SPLITS, TEST_SHARE, KnobConfig,
                               in_test_split, split_hash)


@dataclass(frozen=True)
class TokenExample:
    tokens: tuple[int, ...]
    targets: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> list[int]:
        """The positions t that carry a target."""
        return [t for t, y in enumerate(self.targets) if y != IGNORE]


class TokenConfig(KnobConfig):
    """Knobs of a token task (subclasses add theirs)."""


class TokenTask:
    """Base class of the token tasks. Subclasses set `name` and `Config` and implement
    `vocab_size`, `max_length` and `draw`; `token_name` makes samples readable."""

    name: ClassVar[str]
    Config: ClassVar[type[TokenConfig]] = TokenConfig
    pad_id: ClassVar[int] = 0  # fills a batch's shorter sequences (their targets there are IGNORE)

    def __init__(self, config: TokenConfig | None = None):
        self.config = config if config is not None else self.Config()

    # -- what subclasses provide -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        """The longest sequence the config can produce (batches are padded to it)."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> TokenExample:
        raise NotImplementedError

    def token_name(self, token: int) -> str:
        return str(token)

    # -- the split: what subclasses may state ---------------------------------------------------
    def problem_key(self, ex: TokenExample) -> bytes:
        """The canonical problem of an example: by default its tokens and its targets."""
        return np.asarray(ex.tokens + ex.targets, dtype=np.int64).tobytes()

    def problem_bits(self) -> float:
        """A lower bound on -log2 of the chance of the likeliest problem (0: unknown, so split by key)."""
        return 0.0

    def small_space(self) -> int | None:
        """How many problems there are where they are few (at most SMALL_SPACE), equally likely, and listed
        by `problem`; None otherwise."""
        return None

    def problem(self, k: int) -> TokenExample:
        """Problem number k of a small space (0 <= k < small_space())."""
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------
    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0]

    def _rng(self, seed: int, split: str, i: int, attempt: int = 0) -> np.random.Generator:
        text = f"{self.name}|{seed}|{split}|{i}" + (f"|{attempt}" if attempt else "")
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))

    def example(self, seed: int, split: str, i: int) -> TokenExample:
        if split not in SPLITS:
            raise BadInput(f"unknown split '{split}' (use train or test)")
        if i < 0:
            raise BadInput(f"example indices start from 0, got {i}")
        if self.small_space() is not None:
            members = self._small_split(seed, split)
            return self.problem(members[int(self._rng(seed, split, i).integers(len(members)))])
        if self.problem_bits() >= INDEPENDENT_BITS:
            return self.draw(self._rng(seed, split, i))
        want_test = split == "test"
        for attempt in range(MAX_TRIES):  # attempt 0 is the stream an independent draw would read
            ex = self.draw(self._rng(seed, split, i, attempt))
            if in_test_split(seed, self.problem_key(ex)) == want_test:
                return ex
        raise BadInput(f"{self.name}: no {split} problem in {MAX_TRIES} draws for seed {seed}: this setting has too "
                       f"few distinct problems to split into train and test; enlarge it")

    def _small_split(self, seed: int, split: str) -> list[int]:
        """Problem numbers of one split of a small space: the TEST_SHARE with the lowest hashes are test."""
        cache = self.__dict__.setdefault("_split_cache", {})
        if seed not in cache:
            size = self.small_space()
            if size < 2:
                raise BadInput(f"{self.name}: this setting has only {size} problem: too few to split into train and test")
            ranked = sorted(range(size), key=lambda k: split_hash(seed, self.problem_key(self.problem(k))))
            n_test = max(1, round(size * TEST_SHARE))
            cache[seed] = {"test": ranked[:n_test], "train": ranked[n_test:]}
        return cache[seed][split]

    def batch(self, seed: int, split: str, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Examples start .. start + n - 1 as int64 arrays (n, max_length): tokens and targets,
        right-padded with `pad_id` and IGNORE."""
        L = self.max_length
        tokens = np.full((n, L), self.pad_id, dtype=np.int64)
        targets = np.full((n, L), IGNORE, dtype=np.int64)
        for j in range(n):
            ex = self.example(seed, split, start + j)
            tokens[j, : len(ex.tokens)] = ex.tokens
            targets[j, : len(ex.targets)] = ex.targets
        return tokens, targets

    def render(self, ex: TokenExample) -> tuple[str, str]:
        """Readable (prompt, target) for `seqlab sample`: the tokens, and the scored targets in order."""
        prompt = " ".join(self.token_name(t) for t in ex.tokens)
        target = " ".join(self.token_name(ex.targets[t]) for t in ex.scored)
        return prompt, target

    def sample_record(self, seed: int, split: str, i: int) -> dict[str, Any]:
        ex = self.example(seed, split, i)
        prompt, target = self.render(ex)
        meta = {**ex.meta, "tokens": list(ex.tokens), "targets": list(ex.targets)}
        return {"task": self.name, "prompt": prompt, "target": target, "meta": meta}


def too_few_problems(count: int, what: str, fix: str, least: int = MIN_HASHED_PROBLEMS) -> str:
    """The one line that refuses a setting of `count` problems, where a split needs `least` (hashing needs
    MIN_HASHED_PROBLEMS; a listed space, 2)."""
    return f"this setting has only {count} distinct {what}, too few to split into train and test ({least} at least): {fix}"


TOKEN_TASKS: Registry[type[TokenTask]] = Registry("token task")
register_token_task = TOKEN_TASKS.register


def get_token_task(name: str, **params: Any) -> TokenTask:
    cls = TOKEN_TASKS[TOKEN_TASKS.canonical(name)]
    return cls(parse_config(cls.Config, params, prefix="task."))
