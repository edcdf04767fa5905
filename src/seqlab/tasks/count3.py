"""Triplet-Counting (Count3): Ewer, Chae, Zeng, Kim, Lee 2025, "ENTP: Encoder-only Next Token Prediction",
Section 6; source UW-Madison-Lee-Lab/ENTP, data_generator.py (`Count3Generator` with the `DataGenerator`
it extends) and rasp/count3_v1.py (`count3_true`, the same function written as a double loop).

`get_token_task("count3").example(seed, "train", i)` gives one sequence.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

import math

from seqlab.tasks.token_base import (
    IGNORE, SMALL_SPACE, TokenConfig, TokenExample, TokenTask, register_token_task, too_few_problems,
)


def count3(prefix: np.ndarray) -> int:
    """Count3(x_1..x_n) = |{(i, j) in [n] x [n] : x_i + x_j + x_n = 0 (mod n)}| mod n, with n = len(prefix).

    By residues: with h[a] the number of x_i = a (mod n) and c = -x_n (mod n), the pairs number
    sum_a h[a] * h[(c - a) mod n]."""
    n = len(prefix)
    residues = prefix % n
    h = np.bincount(residues, minlength=n)
    c = -residues[-1] % n
    return int(h @ h[(c - np.arange(n)) % n]) % n


class Count3Config(TokenConfig):
    """ENTP's knobs and defaults (util/config.py): block_size 64, data_gen_seed_size 16, data_gen_seed_max 16."""

    length: int = Field(64, ge=2)  # ENTP's block_size: the tokens the model reads
    seed_size: int = Field(16, ge=1)  # data_gen_seed_size: the random tokens that start the sequence
    seed_max: int = Field(16, ge=1)  # data_gen_seed_max (exclusive): seed tokens are 0 .. seed_max - 1

    @model_validator(mode="after")
    def _check_sizes(self):
        if self.seed_size >= self.length:
            raise ValueError(f"seed_size ({self.seed_size}) must be below length ({self.length}): the targets "
                             f"are the tokens that follow position seed_size")
        if self.seed_max > self.length:
            raise ValueError(f"seed_max ({self.seed_max}) must be at most length ({self.length}), the vocabulary "
                             f"size (ENTP asserts seed_max <= vocab_size)")
        if self.seed_max == 1:
            raise ValueError(too_few_problems(1, "sequence", "seed_max=1 makes every seed token 0; raise seed_max", least=2))
        return self


@register_token_task
class Count3(TokenTask):
    """Triplet-Counting (ENTP, Ewer et al. 2025): each token is Count3 of all the tokens before it.

    Count3(x_1..x_n) = |{(i, j) : 1 <= i, j <= n, x_i + x_j + x_n = 0 (mod n)}| mod n: ordered pairs, i = j
    included, n the length of the prefix (so both the modulus and the range of the answer grow with the
    sequence), x_n its last token. As in ENTP's `Count3Generator`:

    - a_1 .. a_s (s = seed_size) are drawn uniformly from 0 .. seed_max - 1;
    - a_{n+1} = Count3(a_1 .. a_n) for n = s .. length, so a_{n+1} is in 0 .. n - 1;
    - the model reads tokens = a_1 .. a_length (no separator: the whole sequence is one stream) and
      targets[t] = a_{t+2} (the next token) for t = s .. length - 1 (0-based), IGNORE before. This is ENTP's
      `forward_idxs = range(seed_size, block_size)`: a_{s+1}, the first computed token, is read but not
      scored; length - s tokens are.

    vocab_size = length (ENTP's vocab_size = block_size): every token is below it. meta: "seed" (a_1..a_s),
    "sequence" (a_1 .. a_{length+1}) and "answer" (the scored tokens a_{s+2} .. a_{length+1}, in order).

    The seed determines the sequence, so there are seed_max ** seed_size sequences, all equally likely (2^64
    at the defaults, where train and test are independent draws). At most SMALL_SPACE of them are listed and
    ranked for the split, so even seed_max=2, seed_size=1 has one test sequence; seed_max=1 (one sequence) is
    refused. In between, a draw is kept where its sequence hashes to its split (token_base.py).
    """

    name = "count3"
    Config = Count3Config

    @property
    def vocab_size(self) -> int:
        return self.config.length

    @property
    def max_length(self) -> int:
        return self.config.length

    def problem_bits(self) -> float:
        return self.config.seed_size * math.log2(self.config.seed_max)

    def small_space(self) -> int | None:
        c = self.config
        if c.seed_size * math.log2(c.seed_max) > math.log2(SMALL_SPACE):
            return None
        return c.seed_max ** c.seed_size

    def problem(self, k: int) -> TokenExample:
        """The sequence whose seed tokens are k written in base seed_max, first token least significant."""
        c = self.config
        return self._sequence([(k // c.seed_max**j) % c.seed_max for j in range(c.seed_size)])

    def draw(self, rng: np.random.Generator) -> TokenExample:
        return self._sequence(rng.integers(0, self.config.seed_max, size=self.config.seed_size))

    def _sequence(self, seed_tokens) -> TokenExample:
        c = self.config
        L, s = c.length, c.seed_size
        seq = np.empty(L + 1, dtype=np.int64)
        seq[:s] = seed_tokens
        for n in range(s, L + 1):
            seq[n] = count3(seq[:n])
        tokens = seq[:L]
        targets = np.full(L, IGNORE, dtype=np.int64)
        targets[s:] = seq[s + 1:]
        meta = {"seed": seq[:s].tolist(), "sequence": seq.tolist(), "answer": seq[s + 1:].tolist()}
        return TokenExample(tuple(tokens.tolist()), tuple(targets.tolist()), meta)
