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
hash (blake2b) of (task, seed, split, i). The train and test streams are unrelated draws of the same
distribution, as for the function classes; the spaces are large (MQAR at its defaults has more than
10^30 sequences), and a task whose space is small says so in its docstring.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from seqlab.core.configs import Config, parse_config
from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry
from seqlab.core.targets import IGNORE
from seqlab.tasks.base import SPLITS


@dataclass(frozen=True)
class TokenExample:
    tokens: tuple[int, ...]
    targets: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> list[int]:
        """The positions t that carry a target."""
        return [t for t, y in enumerate(self.targets) if y != IGNORE]


class TokenConfig(Config):
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

    # -- shared machinery ----------------------------------------------------------------------
    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0]

    def example(self, seed: int, split: str, i: int) -> TokenExample:
        if split not in SPLITS:
            raise BadInput(f"unknown split '{split}' (use train or test)")
        if i < 0:
            raise BadInput(f"example indices start from 0, got {i}")
        digest = hashlib.blake2b(f"{self.name}|{seed}|{split}|{i}".encode(), digest_size=16).digest()
        return self.draw(np.random.default_rng(int.from_bytes(digest, "little")))

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


TOKEN_TASKS: Registry[type[TokenTask]] = Registry("token task")
register_token_task = TOKEN_TASKS.register


def get_token_task(name: str, **params: Any) -> TokenTask:
    cls = TOKEN_TASKS[TOKEN_TASKS.canonical(name)]
    return cls(parse_config(cls.Config, params, prefix="task."))
