"""The maps of `icl-map`, pure functions on symbol arrays: add k, copy the h-th symbol, reverse, permute by
a derangement; their names (add1, copy0, reverse, perm), the list a config gives and a mixture's weights."""

from __future__ import annotations

import functools
import re
from typing import Callable

import numpy as np

from seqlab.core.registry import nearest


# A map takes words, an int array (..., word_len) of symbols 0 .. n-1, its parameter (k or h; 0 where it
# has none) and the derangement pi (an int array (n,)), and returns the answers, an int array (..., m).
def _add(words: np.ndarray, k: int, pi: np.ndarray) -> np.ndarray:
    return (words + k) % len(pi)


def _copy(words: np.ndarray, h: int, pi: np.ndarray) -> np.ndarray:
    return words[..., h:h + 1]


def _reverse(words: np.ndarray, _: int, pi: np.ndarray) -> np.ndarray:
    return words[..., ::-1]


def _perm(words: np.ndarray, _: int, pi: np.ndarray) -> np.ndarray:
    return pi[words]


MAPS: dict[str, tuple[str, Callable[[np.ndarray, int, np.ndarray], np.ndarray]]] = {
    "add{k}": ("each symbol shifted by k mod n_symbols, 1 <= k < n_symbols (add1: the next letter)", _add),
    "copy{h}": ("the one symbol at index h, 0 <= h < word_len", _copy),
    "reverse": ("the word reversed", _reverse),
    "perm": ("each symbol mapped through a fixed derangement of the alphabet, drawn from perm_seed", _perm),
}
_NAME = re.compile(r"(add|copy)(0|[1-9][0-9]*)|reverse|perm")


def map_family(name: str) -> tuple[str, int]:
    """'add3' -> ('add{k}', 3), 'copy0' -> ('copy{h}', 0), 'reverse' -> ('reverse', 0)."""
    m = _NAME.fullmatch(name)
    if m is None or m.group(1) is None:
        return name, 0
    return ("add{k}" if m.group(1) == "add" else "copy{h}"), int(m.group(2))


def apply_map(name: str, words: np.ndarray, pi: np.ndarray) -> np.ndarray:
    family, arg = map_family(name)
    return MAPS[family][1](words, arg, pi)


def answer_len(name: str, word_len: int) -> int:
    return 1 if name.startswith("copy") else word_len


def map_names(n_symbols: int, word_len: int) -> list[str]:
    """Every map a config with this alphabet and word length can name."""
    return [f"add{k}" for k in range(1, n_symbols)] + [f"copy{h}" for h in range(word_len)] + ["reverse", "perm"]


def parse_maps(text: str, n_symbols: int, word_len: int) -> list[str]:
    """The names of a comma list, checked: known, in range, each once."""
    names = [name.strip() for name in text.split(",")]
    for j, name in enumerate(names):
        m = _NAME.fullmatch(name)
        if m is None:
            near = nearest(name, map_names(n_symbols, word_len))
            hint = f" (did you mean '{near}'?)" if near else f" (maps are {', '.join(MAPS)})"
            raise ValueError(f"unknown map '{name}' in maps{hint}")
        family, arg = map_family(name)
        if family == "add{k}" and not 1 <= arg < n_symbols:
            raise ValueError(f"map '{name}': k must be 1 .. {n_symbols - 1} for an alphabet of {n_symbols} symbols "
                             f"(add0 would leave every word as it is)")
        if family == "copy{h}" and arg >= word_len:
            raise ValueError(f"map '{name}': the index must be 0 .. {word_len - 1} for words of {word_len} symbols")
        if name in names[:j]:
            raise ValueError(f"map '{name}' is listed twice in maps")
    return names


def parse_mix(text: str, names: list[str]) -> dict[str, int]:
    """'add1:3,perm:2' -> {'add1': 3, 'perm': 2}, every name one of `names`."""
    mix: dict[str, int] = {}
    for entry in text.split(","):
        name, colon, count = (part.strip() for part in entry.partition(":"))
        if not colon or not count.isdigit():
            raise ValueError(f"mix entry '{entry.strip()}' must be name:count, as in 'add1:3,perm:2'")
        if name not in names:
            near = nearest(name, names)
            hint = f"did you mean '{near}'? " if near else ""
            raise ValueError(f"mix names '{name}', which is not in maps ({hint}maps: {', '.join(names)})")
        if name in mix:
            raise ValueError(f"mix names '{name}' twice")
        mix[name] = int(count)
    if sum(mix.values()) == 0:
        raise ValueError("mix must hold at least one demonstration")
    return mix


@functools.cache
def derangement(n_symbols: int, perm_seed: int) -> tuple[int, ...]:
    """A uniform permutation of 0 .. n-1 without fixed points: NumPy permutations from perm_seed, redrawn
    until none fixes a symbol (each try succeeds with probability about 1/e)."""
    rng = np.random.default_rng(perm_seed)
    while True:
        pi = rng.permutation(n_symbols)
        if (pi != np.arange(n_symbols)).all():
            return tuple(pi.tolist())
