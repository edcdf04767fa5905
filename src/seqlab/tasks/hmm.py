"""A hidden Markov language: sequences whose true next-token distribution is known exactly, for studying
decoding algorithms (typical sampling, Mirostat, beam search) against the truth.

`get_token_task("hmm").example(seed, "train", i)` gives one sequence; `language(task.config)` the HMM itself,
with the forward algorithm for the likelihood and the predictive distributions of any sequence.
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


# A split by hash (token_base.py) keeps a draw where its sequence hashes to the split asked for, and gives up after
# MAX_TRIES (2000) draws. Where two independent sequences coincide with chance sum_x p(x)^2 <= 2^-10, the test
# split's share M (the sum of p(x) over the sequences that hash to it, each with chance TEST_SHARE = 1/8) is
# below 0.01 with chance at most exp(-2 (1/8 - 0.01)^2 / sum_x p(x)^2) <= exp(-2 * 0.115^2 * 2^10) < 1e-11
# (Hoeffding), and then 2000 draws all miss it with chance at most 0.99^2000 < 2e-9; the train split's share, 7/8
# on average, is safer still. A language more peaked than that (a few sequences holding much of its probability)
# is refused when its config is read.
HASHED_SPLIT_BITS = 10


class HMMConfig(TokenConfig):
    """The language (its states, symbols, peakedness and seed) and the length of its sequences."""

    n_states: int = Field(8, ge=1, le=256)
    n_symbols: int = Field(16, ge=2, le=4096)
    length: int = Field(64, ge=1, le=4096)  # symbols per sequence
    # Dirichlet parameter of every transition and emission row: small values make peaked, low-entropy rows. The
    # upper bound keeps the Dirichlet's gamma draws far from overflow; at 1e6 the rows are uniform to 0.1%.
    concentration: float = Field(0.2, gt=0, le=1e6, allow_inf_nan=False)
    hmm_seed: int = 0  # which language: the matrices are a pure function of n_states, n_symbols, concentration and this

    @model_validator(mode="after")
    def _check_space(self):
        # With n_symbols >= 2, a power capped at MIN_HASHED_PROBLEMS' bit length compares with it as the full one does.
        if (count := self.n_symbols ** min(self.length, MIN_HASHED_PROBLEMS.bit_length())) < MIN_HASHED_PROBLEMS:
            raise ValueError(too_few_problems(count, "sequences", "raise length or n_symbols"))
        if (bits := collision_bits(self)) < HASHED_SPLIT_BITS:
            raise ValueError(f"this language is too peaked to split into train and test: two of its sequences "
                             f"coincide with chance 2^-{bits:.2f} = {2 ** -bits:.3g} (2^-{HASHED_SPLIT_BITS} at most): "
                             f"raise length, concentration or n_states, or try another hmm_seed")
        return self


def _pick(cumulative: np.ndarray, u: float) -> int:
    """Index k with probability row[k] / row.sum(), for `cumulative` = row.cumsum() and u uniform on (0, 1].

    u * total lies in (0, total], and k is the first index whose cumulative sum reaches it: never an entry of
    zero probability (its cumulative sum equals its predecessor's), never past the end however rounding left the
    row's sum."""
    return int(np.searchsorted(cumulative, u * cumulative[-1], side="left"))


@dataclass(frozen=True, eq=False)
class HMMLanguage:
    """An HMM over states 0..S-1 and symbols 0..V-1: state_1 ~ initial, x_t ~ emission[state_t],
    state_{t+1} ~ transition[state_t]."""

    initial: np.ndarray  # (S,) the first state's distribution
    transition: np.ndarray  # (S, S): row s is p(next state | s)
    emission: np.ndarray  # (S, V): row s is p(symbol | s)

    @functools.cached_property
    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.initial.cumsum(), self.transition.cumsum(1), self.emission.cumsum(1)

    def sample(self, rng: np.random.Generator, length: int) -> tuple[list[int], list[int]]:
        """(states, symbols), each of `length`: one uniform per choice, by the inverse of each row's CDF."""
        if length == 0:
            return [], []
        start, transition, emission = self._cumulative
        u = 1.0 - rng.random(2 * length)  # on (0, 1], as `_pick` wants
        states, symbols = [], []
        s = _pick(start, u[0])
        for t in range(length):
            states.append(s)
            symbols.append(_pick(emission[s], u[2 * t + 1]))
            if t + 1 < length:
                s = _pick(transition[s], u[2 * t + 2])
        return states, symbols

    def _forward(self, symbols, rows: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """The forward filter, normalised at every step so that no sequence underflows: the predictive rows (if
        asked for) and p(x_t | x_<t) for each symbol. After a symbol of probability 0 (or below float64's
        smallest, 1e-308) the prefix is impossible: the rows after it are NaN and the probabilities 0."""
        x = np.asarray(symbols, dtype=np.int64).reshape(-1)
        V = self.emission.shape[1]
        if x.size and (x.min() < 0 or x.max() >= V):
            raise ValueError(f"symbols must lie in 0..{V - 1}, got {int(x.min())}..{int(x.max())}")
        belief = self.initial.astype(np.float64)  # p(state_t | x_<t)
        predictive = np.full((len(x) + 1, V), np.nan) if rows else None
        p_seen = np.zeros(len(x))
        for t, v in enumerate(x):
            if rows:
                predictive[t] = belief @ self.emission
            joint = belief * self.emission[:, v]  # p(state_t, x_t | x_<t)
            p_seen[t] = joint.sum()
            if p_seen[t] == 0:
                return predictive, p_seen
            belief = (joint / p_seen[t]) @ self.transition
        if rows:
            predictive[len(x)] = belief @ self.emission
        return predictive, p_seen

    def predictive(self, symbols) -> np.ndarray:
        """(n + 1, V): row t is p(x_{t+1} = v | x_1 .. x_t), row 0 the first symbol's marginal; rows sum to 1."""
        return self._forward(symbols, rows=True)[0]

    def surprisal_bits(self, symbols) -> np.ndarray:
        """-log2 p(x_t | x_<t) for each symbol: (n,), inf from an impossible symbol on."""
        with np.errstate(divide="ignore"):
            return -np.log2(self._forward(symbols, rows=False)[1])

    def log_likelihood(self, symbols) -> float:
        """ln p(x_1 .. x_n), the sum of the logs of the forward filter's normalisers p(x_t | x_<t): -inf for an
        impossible sequence."""
        with np.errstate(divide="ignore"):
            return float(np.log(self._forward(symbols, rows=False)[1]).sum())

    def entropy_rate_bits(self, n_sequences: int, length: int, seed: int) -> tuple[float, float]:
        """The entropy rate in bits per symbol, estimated, and its standard error over sequences.

        An HMM's entropy rate has no closed form. The exact conditional entropy H(x_{t+1} | x_1..x_t = a prefix)
        comes from the predictive row of that prefix; its mean over prefixes drawn from the language is
        H(X_{t+1} | X_1..X_t), which tends to the entropy rate as t grows (the filter forgets its start). The
        estimate averages it over the positions of the second half of each of `n_sequences` sequences of
        `length` drawn with `seed`; the standard error is that of the mean of the per-sequence averages."""
        if n_sequences < 2 or length < 1:
            raise ValueError(f"the estimate needs 2 sequences or more and a length of 1 or more, got "
                             f"{n_sequences} and {length}")
        rng = np.random.default_rng(seed)
        per_sequence = np.empty(n_sequences)
        for k in range(n_sequences):
            pred = self.predictive(self.sample(rng, length)[1])[length // 2:length]  # predicting x_{L/2+1}..x_L
            with np.errstate(divide="ignore", invalid="ignore"):
                per_sequence[k] = -np.where(pred > 0, pred * np.log2(pred), 0.0).sum(-1).mean()
        return float(per_sequence.mean()), float(per_sequence.std(ddof=1) / math.sqrt(n_sequences))

    def likeliest_bound_bits(self, length: int) -> float:
        """A lower bound on -log2 p(x) for every sequence x of `length`.

        With m_s = max_v emission[s, v], p(x) = sum over paths of p(path) prod_t emission[s_t, x_t] is at most
        sum over paths of p(path) prod_t m_{s_t}: the forward recursion with m in place of an emission column.
        That is at most (max_s m_s) ** length, the cruder bound, and usually far below it."""
        m = self.emission.max(1)
        alpha, log2_total = self.initial * m, 0.0
        for _ in range(length - 1):
            scale = alpha.sum()
            log2_total += math.log2(scale)
            alpha = (alpha / scale) @ self.transition * m
        return -(log2_total + math.log2(alpha.sum()))

    def collision_bits(self, length: int, enough: float = math.inf) -> float:
        """-log2 of the chance that two independent sequences of `length` coincide, sum_x p(x)^2 (Rényi's
        entropy of order 2); or, as soon as a prefix reaches `enough` bits, that prefix's (it only grows with
        length, since sum_v p(x, v)^2 <= p(x)^2).

        By the forward recursion of the pair of chains: pair[i, j] = p(s_t = i, s'_t = j, x_1..x_t = x'_1..x'_t),
        normalised at every step; same[i, j] = sum_v emission[i, v] emission[j, v], the chance that states i and
        j emit the same symbol."""
        same = self.emission @ self.emission.T
        pair, bits = np.outer(self.initial, self.initial) * same, 0.0
        for t in range(length):
            if t:
                pair = (self.transition.T @ pair @ self.transition) * same
            total = pair.sum()
            bits -= math.log2(total)
            if bits >= enough:
                break
            pair = pair / total
        return bits


@functools.lru_cache(maxsize=16)
def language_of(n_states: int, n_symbols: int, concentration: float, hmm_seed: int) -> HMMLanguage:
    """The HMM these knobs name: its generator is seeded by their hash (blake2b), so the same knobs give the same
    matrices in any process."""
    text = f"hmm|{n_states}|{n_symbols}|{concentration!r}|{hmm_seed}"
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "little"))
    transition = rng.dirichlet(np.full(n_states, concentration), size=n_states)
    emission = rng.dirichlet(np.full(n_symbols, concentration), size=n_states)
    # Uniform over states at the start, so that no state is favoured by the draw: the matrices alone decide
    # which states matter.
    initial = np.full(n_states, 1.0 / n_states)
    for a in (initial, transition, emission):
        a.setflags(write=False)  # one object is shared by every task of this config
    return HMMLanguage(initial, transition, emission)


def language(config: HMMConfig) -> HMMLanguage:
    """The HMM of a config: the same knobs give the same matrices, whatever the example seed."""
    return language_of(config.n_states, config.n_symbols, config.concentration, config.hmm_seed)


def likeliest_bits(config: HMMConfig) -> float:
    """`HMMLanguage.likeliest_bound_bits` of a config's language and length, computed once per config."""
    return _likeliest_bits(config.n_states, config.n_symbols, config.concentration, config.hmm_seed, config.length)


def collision_bits(config: HMMConfig) -> float:
    """`HMMLanguage.collision_bits` of a config's language and length, as far as HASHED_SPLIT_BITS."""
    return language(config).collision_bits(config.length, enough=HASHED_SPLIT_BITS)


@functools.lru_cache(maxsize=64)
def _likeliest_bits(n_states: int, n_symbols: int, concentration: float, hmm_seed: int, length: int) -> float:
    return language_of(n_states, n_symbols, concentration, hmm_seed).likeliest_bound_bits(length)


@register_token_task
class HMM(TokenTask):
    """Sequences of a hidden Markov model, every symbol scored, their true distribution known (forward algorithm).

    The language (n_states states, n_symbols symbols, every transition and emission row a Dirichlet draw with
    parameter `concentration`, a uniform first state) is fixed by its knobs and `hmm_seed`, drawn from a
    generator seeded by their hash and never by the example seed. An example draws x_1 .. x_L (L = length) from
    it. tokens = (BOS, x_1, .., x_{L-1}) with BOS = n_symbols, targets = (x_1, .., x_L): every position is
    scored, targets[t] being the symbol after tokens[:t + 1]. vocab_size = n_symbols + 1, max_length = L.
    meta: "states" (the hidden path), "answer" (x_1 .. x_L) and "log_likelihood" (ln p(x_1 .. x_L)).

    problem_bits is `HMMLanguage.likeliest_bound_bits`, a lower bound on -log2 of the likeliest sequence's
    probability. Where it reaches INDEPENDENT_BITS (98 bits at the defaults) both splits are exact draws of the
    HMM. Below it a split is the HMM restricted to the sequences that hash to it (token_base.py): its stream is
    then not exactly the HMM's, though a model, which cannot learn the hash, can only learn the HMM. Refused when
    the config is read: fewer than MIN_HASHED_PROBLEMS sequences, and a language so peaked that a split by hash
    could miss one split in MAX_TRIES draws (two sequences coinciding with chance above 2^-HASHED_SPLIT_BITS).
    """

    name = "hmm"
    Config = HMMConfig

    def __init__(self, config: HMMConfig | None = None):
        super().__init__(config)
        self._language = language(self.config)

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
        return likeliest_bits(self.config)

    def draw(self, rng: np.random.Generator) -> TokenExample:
        states, symbols = self._language.sample(rng, self.config.length)
        meta = {"states": states, "answer": symbols, "log_likelihood": self._language.log_likelihood(symbols)}
        return TokenExample((self.bos, *symbols[:-1]), tuple(symbols), meta)

    def token_name(self, token: int) -> str:
        return "<s>" if token == self.bos else str(token)

