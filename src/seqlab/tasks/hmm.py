"""A hidden Markov language: sequences whose true next-token distribution is known exactly, for studying
decoding algorithms (typical sampling, Mirostat, beam search) against the truth.

`get_token_task("hmm").example(seed, "train", i)` gives one sequence; `language(task.config)` the HMM itself,
with the forward algorithm for the likelihood of any sequence.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.base import MIN_HASHED_PROBLEMS
from seqlab.tasks.token_base import TokenConfig, TokenExample, TokenTask, register_token_task, too_few_problems


class HMMConfig(TokenConfig):
    """The language (its states, symbols, peakedness and seed) and the length of its sequences."""

    n_states: int = Field(8, ge=1, le=256)
    n_symbols: int = Field(16, ge=2, le=4096)
    length: int = Field(64, ge=1, le=4096)  # symbols per sequence
    concentration: float = Field(0.2, gt=0, le=100)  # Dirichlet parameter of every row: small = peaked rows
    hmm_seed: int = 0  # which language: the parameters are a pure function of the four knobs above it and this

    @model_validator(mode="after")
    def _check_space(self):
        if self.length * math.log2(self.n_symbols) < math.log2(MIN_HASHED_PROBLEMS):
            count = self.n_symbols ** self.length
            raise ValueError(too_few_problems(count, "sequences", "raise length or n_symbols"))
        return self


@dataclass(frozen=True, eq=False)
class HMMLanguage:
    initial: np.ndarray  # (S,) the first state's distribution
    transition: np.ndarray  # (S, S): row s is p(next state | s)
    emission: np.ndarray  # (S, V): row s is p(symbol | s)

    def sample(self, rng: np.random.Generator, length: int) -> tuple[list[int], list[int]]:
        """(states, symbols), each of `length`."""
        S, V = self.emission.shape
        states, symbols = [], []
        s = int(rng.choice(S, p=self.initial))
        for _ in range(length):
            states.append(s)
            symbols.append(int(rng.choice(V, p=self.emission[s])))
            s = int(rng.choice(S, p=self.transition[s]))
        return states, symbols

    def predictive(self, symbols) -> np.ndarray:
        """(n + 1, V): row t is p(x_{t+1} = v | x_1 .. x_t), row 0 the first symbol's marginal; by the forward
        filter, normalised at every step so long sequences do not underflow."""
        belief = self.initial.astype(np.float64)  # p(state_{t+1} | x_1 .. x_t)
        rows = []
        for x in symbols:
            rows.append(belief @ self.emission)
            joint = belief * self.emission[:, x]
            belief = (joint / joint.sum()) @ self.transition
        rows.append(belief @ self.emission)
        return np.asarray(rows)

    def surprisal_bits(self, symbols) -> np.ndarray:
        """-log2 p(x_t | x_<t) for each symbol: (n,)."""
        pred = self.predictive(symbols)[:-1]
        p = pred[np.arange(len(symbols)), np.asarray(symbols, dtype=np.int64)]
        with np.errstate(divide="ignore"):
            return -np.log2(p)

    def log_likelihood(self, symbols) -> float:
        """ln p(x_1 .. x_n): the sum of the log predictive probabilities (-inf for an impossible sequence)."""
        return float(-self.surprisal_bits(symbols).sum() * math.log(2))

    def entropy_rate_bits(self, n_sequences: int, length: int, seed: int) -> tuple[float, float]:
        """The entropy rate (bits per symbol) estimated as the mean exact conditional entropy H(x_t | x_<t = the
        observed prefix), over sampled sequences and the positions of their second half (where the filter has
        forgotten its start); with its standard error over sequences. An HMM's entropy rate has no closed form."""
        rng = np.random.default_rng(seed)
        means = []
        for _ in range(n_sequences):
            _, x = self.sample(rng, length)
            pred = self.predictive(x)[length // 2:length]
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.where(pred > 0, pred * np.log2(pred), 0.0).sum(-1)
            means.append(h.mean())
        means = np.asarray(means)
        se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")
        return float(means.mean()), se


@functools.lru_cache(maxsize=64)
def _language(n_states: int, n_symbols: int, concentration: float, hmm_seed: int) -> HMMLanguage:
    text = f"hmm|{n_states}|{n_symbols}|{concentration!r}|{hmm_seed}"
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "little"))
    transition = rng.dirichlet(np.full(n_states, concentration), size=n_states)
    emission = rng.dirichlet(np.full(n_symbols, concentration), size=n_states)
    # Uniform over states at the start, so the draw of the matrices alone decides which states matter.
    initial = np.full(n_states, 1.0 / n_states)
    for a in (transition, emission, initial):
        a.setflags(write=False)
    return HMMLanguage(initial, transition, emission)


def language(config: HMMConfig) -> HMMLanguage:
    """The HMM of a config: the same knobs give the same matrices, whatever the example seed."""
    return _language(config.n_states, config.n_symbols, config.concentration, config.hmm_seed)


@register_token_task
class HMM(TokenTask):
    """Sequences of a hidden Markov model: each symbol is scored, its true distribution known (the forward algorithm).

    The language (n_states states, n_symbols symbols, every transition and emission row from a Dirichlet with
    parameter `concentration`, a uniform first state) is fixed by its knobs and `hmm_seed`. An example draws
    x_1 .. x_L (L = length) from it. tokens = (BOS, x_1, .., x_{L-1}) with BOS = n_symbols, targets = (x_1, .., x_L):
    every position is scored, so targets[t] is the symbol after reading tokens[:t + 1]. vocab_size = n_symbols + 1.
    meta: "states" (the hidden path), "answer" (x_1 .. x_L) and "log_likelihood" (natural log, by the forward
    algorithm).

    The split hashes each sequence (token_base.py); a setting with fewer than MIN_HASHED_PROBLEMS possible
    sequences is refused, and a language so peaked that one split holds almost none of the probability (a few
    sequences take nearly all of it) is refused in one line when an example of that split is asked for. problem_bits: p(x) = prod_t p(x_t | x_<t) <= (max emission)^L, a lower bound on -log2
    of the likeliest sequence's probability.
    """

    name = "hmm"
    Config = HMMConfig

    @property
    def vocab_size(self) -> int:
        return self.config.n_symbols + 1

    @property
    def max_length(self) -> int:
        return self.config.length

    @property
    def bos(self) -> int:
        return self.config.n_symbols

    def problem_bits(self) -> float:
        return -self.config.length * math.log2(float(language(self.config).emission.max()))

    def problem_key(self, ex: TokenExample) -> bytes:
        return np.asarray(ex.targets, dtype=np.int64).tobytes()  # the symbols: the hidden path is not the problem

    def draw(self, rng: np.random.Generator) -> TokenExample:
        lang = language(self.config)
        states, symbols = lang.sample(rng, self.config.length)
        tokens = (self.bos, *symbols[:-1])
        meta = {"states": states, "answer": symbols, "log_likelihood": lang.log_likelihood(symbols)}
        return TokenExample(tuple(tokens), tuple(symbols), meta)

    def token_name(self, token: int) -> str:
        return "<s>" if token == self.bos else str(token)
