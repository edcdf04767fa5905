"""Multi-query associative recall (MQAR), as Zoology generates it: Arora, Eyuboglu et al. 2023, "Zoology:
Measuring and Improving Recall in Efficient Language Models"; source HazyResearch/zoology,
zoology/data/associative_recall.py, `multiquery_ar` (the same code as zoology/data/multiquery_ar.py with
num_passes=1).

`get_token_task("mqar", vocab_size=256).example(seed, "train", i)` gives one sequence.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

import math

from seqlab.tasks.base import MIN_HASHED_PROBLEMS
from seqlab.tasks.token_base import IGNORE, TokenConfig, TokenExample, TokenTask, register_token_task, too_few_problems


class MQARConfig(TokenConfig):
    """Zoology's knobs and defaults (vocab 8192, length 64, 4 pairs: the first and smallest of the training
    configs of its original MQAR sweep; power_a 0.01 and random_non_queries as in `multiquery_ar`)."""

    vocab_size: int = Field(8192, ge=2)
    input_seq_len: int = Field(64, ge=4)
    num_kv_pairs: int = Field(4, ge=1)
    power_a: float = Field(0.01, gt=0, allow_inf_nan=False)
    random_non_queries: bool = True

    @model_validator(mode="after")
    def _check_sizes(self):
        # Zoology's three asserts, in its order. Together they also leave enough keys and values:
        # vocab_size > input_seq_len >= 4 * num_kv_pairs gives vocab_size // 2 - 1 >= num_kv_pairs.
        L, kv, V = self.input_seq_len, self.num_kv_pairs, self.vocab_size
        if L % 2:
            raise ValueError(f"input_seq_len must be even (Zoology asserts it), got {L}")
        if V <= L:
            raise ValueError(f"vocab_size ({V}) must be larger than input_seq_len ({L}), as Zoology asserts")
        if 4 * kv > L:
            raise ValueError(f"input_seq_len ({L}) must be at least 4 * num_kv_pairs = {4 * kv}: the pairs take "
                             f"2 * num_kv_pairs tokens and each key needs its own query slot after them")
        if (count := self.n_sequences()) < MIN_HASHED_PROBLEMS:
            raise ValueError(too_few_problems(count, "sequences", "raise vocab_size or input_seq_len"))
        return self

    def n_sequences(self, cap: int = 2**64) -> int:
        """Distinct (tokens, targets): ordered keys, ordered values, the slots of the queries, the fillers;
        counted up to `cap` (a larger count is given as `cap`, so that no knob makes this slow)."""
        V, L, k = self.vocab_size, self.input_seq_len, self.num_kv_pairs
        half, slots = V // 2, (L - 2 * k) // 2
        fillers = (L - 3 * k) * math.log2(V) if self.random_non_queries else 0.0
        if log2_perm(half - 1, k) + log2_perm(V - half, k) + log2_perm(slots, k) + fillers > math.log2(cap) + 1:
            return cap
        count = math.perm(half - 1, k) * math.perm(V - half, k) * math.perm(slots, k)
        return min(cap, count * (V ** (L - 3 * k) if self.random_non_queries else 1))


def log2_perm(n: int, k: int) -> float:
    """log2 of n! / (n - k)!, the ordered choices of k of n (-inf where k > n), without computing it."""
    if k > n:
        return -math.inf
    return (math.lgamma(n + 1) - math.lgamma(n - k + 1)) / math.log(2)


@register_token_task
class MQAR(TokenTask):
    """Multi-query associative recall (Zoology): key-value pairs, then every key queried once; predict its value.

    With V = vocab_size, L = input_seq_len, k = num_kv_pairs and C = 2k (Zoology's `_mqar` / `multiquery_ar`):

    - keys: k distinct tokens drawn uniformly from 1 .. V//2 - 1 (token 0 is never a key or a value; it
      marks the empty slots before they are filled); values: k distinct tokens drawn uniformly from
      V//2 .. V - 1, independently of the keys. Pair j is (keys[j], values[j]).
    - tokens[0:C] = k1 v1 k2 v2 ... kk vk.
    - query slots: the query region tokens[C:L] has S = (L - C) // 2 slots at even offsets, slot g at
      position C + 2g. The slots of the k queries, gaps[0..k-1], are drawn without replacement with
      probability proportional to p_g = (g + 1) ** (power_a - 1), g = 0 .. S-1: successive sampling, each
      draw from p renormalised over the slots not yet taken, which is what `np.random.choice(S, k,
      replace=False, p=p)` samples (here as an exponential race: slot g arrives at time E_g / p_g). The
      j-th draw is key j's slot: tokens[C + 2 * gaps[j]] = keys[j]. With power_a = 0.01 a query at gap 0
      (right after the pairs) is about twice as likely as one at gap 1; power_a = 1 is uniform.
    - targets[C + 2 * gaps[j]] = values[j] (what the model predicts after reading the query key; Zoology's
      labels shifted by one, so a decoder's next-token loss applies), IGNORE (-100) everywhere else. The
      value is never written after its query: the token that follows a query is filler.
    - filler: every other position of the query region is, with random_non_queries, a token drawn
      uniformly from 0 .. V - 1 (Zoology's `torch.randint(vocab_size)` on the zeros: fillers can repeat a
      key or a value, and then carry no target); without it, 0.

    Every sequence has length exactly L. meta: keys and values (in pair order), query_positions[j] (where
    key j is queried), gaps, and "answer": the values in the order they are asked for (the targets read
    left to right). A small vocabulary with few pairs makes a small space (vocab 17, length 16, 2 pairs,
    no filler: 42 * 72 * 30 = 90720 sequences, `MQARConfig.n_sequences`): below 2^64 equally likely
    keys, values and fillers a draw is kept where its sequence hashes to its split (token_base.py), and
    a setting of fewer than 64 sequences is refused (vocab 5, length 4, one pair: 15).
    """

    name = "mqar"
    Config = MQARConfig

    def __init__(self, config: MQARConfig | None = None):
        super().__init__(config)
        c = self.config
        self._slots = (c.input_seq_len - 2 * c.num_kv_pairs) // 2
        self._p = np.arange(1, self._slots + 1, dtype=np.float64) ** (c.power_a - 1)
        self._p /= self._p.sum()

    def problem_bits(self) -> float:
        # Keys, values and fillers are uniform; the query slots (not counted) only add to it.
        c = self.config
        V, k, half = c.vocab_size, c.num_kv_pairs, c.vocab_size // 2
        fillers = (c.input_seq_len - 3 * k) * math.log2(V) if c.random_non_queries else 0.0
        return log2_perm(half - 1, k) + log2_perm(V - half, k) + fillers

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        return self.config.input_seq_len

    def draw(self, rng: np.random.Generator) -> TokenExample:
        c = self.config
        V, L, k = c.vocab_size, c.input_seq_len, c.num_kv_pairs
        half, ctx = V // 2, 2 * c.num_kv_pairs
        keys = 1 + rng.choice(half - 1, size=k, replace=False)
        values = half + rng.choice(V - half, size=k, replace=False)
        # Successive sampling without replacement in proportion to p: the order in which independent
        # exponential clocks with rates p_g ring. The first to ring is slot g with probability p_g, the next
        # one is drawn from the rest in proportion to p, and so on.
        gaps = np.argsort(rng.standard_exponential(self._slots) / self._p, kind="stable")[:k]
        positions = ctx + 2 * gaps
        if c.random_non_queries:
            tokens = rng.integers(0, V, size=L, dtype=np.int64)
        else:
            tokens = np.zeros(L, dtype=np.int64)
        tokens[0:ctx:2] = keys
        tokens[1:ctx:2] = values
        tokens[positions] = keys
        targets = np.full(L, IGNORE, dtype=np.int64)
        targets[positions] = values
        order = np.argsort(positions)
        meta = {
            "keys": keys.tolist(),
            "values": values.tolist(),
            "query_positions": positions.tolist(),
            "gaps": gaps.tolist(),
            "answer": values[order].tolist(),
        }
        return TokenExample(tuple(tokens.tolist()), tuple(targets.tolist()), meta)
