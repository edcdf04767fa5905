"""Synthetic key-value retrieval: Xiong, Papageorgiou, Lee, Papailiopoulos 2024, "From Artificial Needles to
Real Haystacks: Improving Retrieval Capabilities in LLMs by Finetuning on Synthetic Data"; source
edixiong/artificial-needles, data-generation/scripts/dict_builder.py (`build_dicts`), prompting.py,
answering.py and the prompt form2_unshuffled_singlesk_wtemplate, with the paper's simple-dictionary data
config dataset/yaml/simpledict_ndicts85_34_wtemplate_ordered_5_3.yaml.

`get_token_task("kv-retrieval", num_dicts=10).example(seed, "train", i)` gives one sequence.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.token_base import IGNORE, TokenConfig, TokenExample, TokenTask, register_token_task

# One character per token: the generator writes the problem as a string and maps it through LOOKUP.
# "D" is the word "Dictionary", "\n" the line break between dictionaries, "Q" the query, "=" the answer
# separator and "$" the end of the answer.
CHARS = "0123456789{}:,()[]D\nQ=$"
NAMES = ["<pad>", *"0123456789{}:,()[]", "Dict", "<nl>", "Q", "=", "<eos>"]
LOOKUP = np.zeros(128, dtype=np.int64)
for _id, _ch in enumerate(CHARS, start=1):
    LOOKUP[ord(_ch)] = _id


class KVRetrievalConfig(TokenConfig):
    """Defaults: the paper's simple-dictionary data (85 dictionaries; the gold one holds 3 pairs, the others
    3 or 4; keys and values of 3 or 4 digits; gold dictionary uniform). The multi-subkey knobs are
    seqlab's choices (the repository ships no multi-subkey data config); their names follow `build_dicts`."""

    variant: Literal["simple", "multi-subkey"] = "simple"
    num_dicts: int = Field(85, ge=1)
    gold_dict_size: int = Field(3, ge=1)  # pairs in the dictionary that holds the gold key
    dict_size_min: int = Field(3, ge=0)  # pairs in every other dictionary: uniform in [min, max]
    dict_size_max: int = Field(4, ge=0)
    key_digits_min: int = Field(3, ge=1)  # digits of a key (of each subkey, multi-subkey): uniform in [min, max]
    key_digits_max: int = Field(4, ge=1, le=18)
    value_digits_min: int = Field(3, ge=1)
    value_digits_max: int = Field(4, ge=1, le=18)
    gold_dict: int | None = Field(None, ge=1)  # 1-based dictionary holding the gold key; None: uniform
    # multi-subkey only
    gold_subkeys: int = Field(3, ge=1)  # subkeys of the gold key
    subkeys_min: int = Field(3, ge=1)  # subkeys of every other key: uniform in [min, max]
    subkeys_max: int = Field(4, ge=1)
    common_subkeys: int = Field(2, ge=0)  # subkeys of the gold key that other keys may share
    p_share: float = Field(0.5, ge=0, le=1)  # probability that another key draws from the common subkeys
    p_share_each: float = Field(0.5, ge=0, le=1)  # ... and then that it takes each common subkey
    shuffle_query: bool = True  # the query lists the gold subkeys in a random order

    @model_validator(mode="after")
    def _check(self):
        for low, high in (("dict_size_min", "dict_size_max"), ("key_digits_min", "key_digits_max"),
                          ("value_digits_min", "value_digits_max"), ("subkeys_min", "subkeys_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        if self.gold_dict is not None and self.gold_dict > self.num_dicts:
            raise ValueError(f"gold_dict ({self.gold_dict}) must be at most num_dicts ({self.num_dicts})")
        keys = 10 ** self.key_digits_max - 10 ** (self.key_digits_min - 1)
        pairs = max(self.dict_size_max, self.gold_dict_size - 1)
        if self.variant == "simple" and keys - 1 < pairs:
            raise ValueError(f"keys of {self.key_digits_min}-{self.key_digits_max} digits leave {keys - 1} keys "
                             f"besides the gold key, fewer than the {pairs} distinct keys a dictionary needs")
        if self.variant == "multi-subkey":
            # build_dicts asserts both: a key must always have a subkey of its own besides the common ones.
            if self.gold_subkeys <= self.common_subkeys or self.subkeys_min <= self.common_subkeys:
                raise ValueError(f"gold_subkeys ({self.gold_subkeys}) and subkeys_min ({self.subkeys_min}) must "
                                 f"both exceed common_subkeys ({self.common_subkeys})")
            g = self.gold_subkeys
            # Other keys: sets of distinct subkeys that do not hold every gold subkey.
            others = sum(math.comb(keys, m) - (math.comb(keys - g, m - g) if m >= g else 0)
                         for m in range(self.subkeys_min, self.subkeys_max + 1))
            if keys < max(g, self.subkeys_max) or others < pairs:
                raise ValueError(f"subkeys of {self.key_digits_min}-{self.key_digits_max} digits ({keys} of them) "
                                 f"cannot make {pairs} distinct keys of {self.subkeys_min}-{self.subkeys_max} "
                                 f"subkeys beside a gold key of {g}")
        return self


def _numbers(rng: np.random.Generator, size: int, lo: int, hi: int) -> np.ndarray:
    """`size` integers: a digit count uniform in [lo, hi], then a number of exactly that many digits,
    uniformly (dict_builder's `generate_subkey` and `generate_val`)."""
    digits = rng.integers(lo, hi + 1, size=size)
    return rng.integers(10 ** (digits - 1), 10**digits, dtype=np.int64)


@register_token_task
class KVRetrieval(TokenTask):
    """Key-value retrieval over a list of dictionaries (Xiong et al. 2024): report a key's value and its dictionary.

    As in `build_dicts` (simple variant: keys of one subkey):

    - num_dicts dictionaries, named 1 .. num_dicts in order. The gold dictionary (gold_dict, or uniform)
      holds gold_dict_size pairs, every other one a size uniform in [dict_size_min, dict_size_max].
    - A key (every subkey in multi-subkey) and a value are integers whose digit count is uniform in
      [key_digits_min, key_digits_max] (value_digits_*) and which are uniform among the integers of that
      many digits (no leading zero).
    - The gold pair (gold key, gold value) sits at a uniform position of the gold dictionary. Every other
      pair has a key other than the gold key and a value other than the gold value (build_dicts redraws
      both); its keys are distinct within its dictionary (a Python dict cannot hold a key twice; here a
      repeat is redrawn rather than dropped, so every dictionary has its drawn size). Keys may repeat
      across dictionaries.
    - multi-subkey: a key is a tuple of distinct subkeys. common_subkeys subkeys are drawn once per example;
      the gold key holds all of them and gold_subkeys - common_subkeys fresh ones, in a random order.
      Another key has a size uniform in [subkeys_min, subkeys_max]; with probability p_share it takes each
      common subkey with probability p_share_each; fresh subkeys fill it up; its order is random. No other
      key holds every gold subkey (build_dicts only excludes the gold key itself; this makes the query's
      answer unique also when its subkeys are listed out of order).

    Tokens (the paper's prompt "Dictionary [1] {123: 4567, 890: 1234}", one dictionary a line, then the
    question and the answer "The value of key 123 is 4567 and it is in Dictionary [1]", written with 23
    symbols and pad = 0):

        Dict [ 1 ] { 1 2 3 : 4 5 6 7 , 8 9 0 : 1 2 3 4 } <nl> Dict [ 2 ] { ... } <nl> ... <nl>
        Q 1 2 3 = 4 5 6 7 [ 1 ] <eos>

    multi-subkey keys are written "( 1 4 1 , 9 8 6 , 1 6 3 )" and the query lists the gold subkeys without
    parentheses, shuffled when shuffle_query ("Q 9 8 6 , 1 4 1 , 1 6 3 ="), like the paper's shuffled
    prompts. targets[t] = tokens[t + 1] from the "=" on: the value's digits, "[", the gold dictionary's
    name, "]" and <eos>; IGNORE elsewhere.

    meta: variant, dictionaries (dictionary d at index d - 1, a list of [key, value] pairs in written order;
    a multi-subkey key is a list of subkeys), gold_key, query (the key as the question writes it), gold_value,
    gold_dict (1-based, as written), "answer": {"value": gold_value, "dictionary": gold_dict} and, in
    multi-subkey, common_subkeys.
    """

    name = "kv-retrieval"
    Config = KVRetrievalConfig

    def problem_bits(self) -> float:
        """From the values alone: no value is likelier than 1 / (its digit counts * 9 * 10^(value_digits_min - 1)),
        twice that for a value redrawn to differ from the gold one. The smallest setting (one dictionary of one
        pair of one-digit numbers) has 81 problems, enough to split by hash; the defaults have thousands of bits."""
        c = self.config
        one = math.log2((c.value_digits_max - c.value_digits_min + 1) * 9 * 10 ** (c.value_digits_min - 1))
        others = c.gold_dict_size - 1 + (c.num_dicts - 1) * c.dict_size_min
        return one + others * max(0.0, one - 1)

    @property
    def vocab_size(self) -> int:
        return len(NAMES)

    @property
    def max_length(self) -> int:
        c = self.config
        multi = c.variant == "multi-subkey"
        subkeys = max(c.gold_subkeys, c.subkeys_max) if multi else 1
        key = subkeys * (c.key_digits_max + 1) - 1 + (2 if multi else 0)
        query = (c.gold_subkeys if multi else 1) * (c.key_digits_max + 1) - 1
        pair = key + 1 + c.value_digits_max

        def body(n: int) -> int:  # "{" pairs joined by "," "}"
            return 2 + n * (pair + 1) - (1 if n else 0)

        names = sum(len(str(d)) for d in range(1, c.num_dicts + 1))
        heads = 4 * c.num_dicts + names  # "Dict [ name ]" and the line break after each dictionary
        bodies = body(c.gold_dict_size) + (c.num_dicts - 1) * body(c.dict_size_max)
        answer = c.value_digits_max + 2 + len(str(c.num_dicts)) + 1
        return heads + bodies + 1 + query + 1 + answer

    def token_name(self, token: int) -> str:
        return NAMES[token]

    # -- drawing ---------------------------------------------------------------------------------
    def _sizes(self, rng: np.random.Generator, gold: int) -> list[int]:
        c = self.config
        sizes = rng.integers(c.dict_size_min, c.dict_size_max + 1, size=c.num_dicts).tolist()
        sizes[gold] = c.gold_dict_size
        return sizes

    def _simple(self, rng, sizes, gold, slot):
        c = self.config
        gold_key = int(_numbers(rng, 1, c.key_digits_min, c.key_digits_max)[0])
        gold_value = int(_numbers(rng, 1, c.value_digits_min, c.value_digits_max)[0])
        total = sum(sizes)
        keys = _numbers(rng, total, c.key_digits_min, c.key_digits_max).tolist()
        values = _numbers(rng, total, c.value_digits_min, c.value_digits_max).tolist()
        dicts, start = [], 0
        for d, size in enumerate(sizes):
            pairs, seen = [], set()
            for j in range(start, start + size):
                if d == gold and j - start == slot:
                    pairs.append((gold_key, gold_value))
                    continue
                key, value = keys[j], values[j]
                while key == gold_key or key in seen:
                    key = int(_numbers(rng, 1, c.key_digits_min, c.key_digits_max)[0])
                while value == gold_value:
                    value = int(_numbers(rng, 1, c.value_digits_min, c.value_digits_max)[0])
                seen.add(key)
                pairs.append((key, value))
            dicts.append(pairs)
            start += size
        return dicts, gold_key, gold_value, gold_key, {}

    def _subkeys(self, rng, n: int, avoid: set) -> list[int]:
        c = self.config
        out: list[int] = []
        while len(out) < n:
            for s in _numbers(rng, n - len(out), c.key_digits_min, c.key_digits_max).tolist():
                if s not in avoid and len(out) < n:
                    avoid.add(s)
                    out.append(s)
        return out

    def _other_keys(self, rng, n: int, common: list[int], gold: set) -> list[tuple[int, ...]]:
        """n keys that are not the gold key: a size, the common subkeys they share, fresh subkeys, a random
        order; drawn for all n at once, and a key with a repeated subkey or every gold subkey drawn again."""
        c = self.config
        size = rng.integers(c.subkeys_min, c.subkeys_max + 1, size=n).tolist()
        take = (rng.random((n, len(common))) < c.p_share_each) & (rng.random((n, 1)) < c.p_share)
        need = [k - t for k, t in zip(size, take.sum(axis=1).tolist())]
        fresh = _numbers(rng, sum(need), c.key_digits_min, c.key_digits_max).tolist()
        order = rng.random((n, c.subkeys_max)).argsort(axis=1).tolist()
        out, f = [], 0
        for i in range(n):
            key = [s for s, t in zip(common, take[i]) if t] + fresh[f:f + need[i]]
            f += need[i]
            if len(set(key)) < len(key) or gold <= set(key):
                out.extend(self._other_keys(rng, 1, common, gold))
            else:
                out.append(tuple(key[o] for o in order[i] if o < size[i]))
        return out

    def _multi(self, rng, sizes, gold, slot):
        c = self.config
        common = self._subkeys(rng, c.common_subkeys, set())
        gold_key = common + self._subkeys(rng, c.gold_subkeys - c.common_subkeys, set(common))
        gold_key = [gold_key[i] for i in rng.permutation(len(gold_key))]
        gold_set = set(gold_key)
        gold_value = int(_numbers(rng, 1, c.value_digits_min, c.value_digits_max)[0])
        total = sum(sizes)  # the gold slot's draws go unused
        keys = self._other_keys(rng, total, common, gold_set)
        values = _numbers(rng, total, c.value_digits_min, c.value_digits_max).tolist()
        dicts, start = [], 0
        for d, size in enumerate(sizes):
            pairs, seen = [], set()
            for j in range(start, start + size):
                if d == gold and j - start == slot:
                    pairs.append((list(gold_key), gold_value))
                    continue
                key, value = keys[j], values[j]
                while frozenset(key) in seen:
                    key = self._other_keys(rng, 1, common, gold_set)[0]
                while value == gold_value:
                    value = int(_numbers(rng, 1, c.value_digits_min, c.value_digits_max)[0])
                seen.add(frozenset(key))
                pairs.append((list(key), value))
            dicts.append(pairs)
            start += size
        query = [gold_key[i] for i in rng.permutation(len(gold_key))] if c.shuffle_query else list(gold_key)
        return dicts, list(gold_key), gold_value, query, {"common_subkeys": common}

    def draw(self, rng: np.random.Generator) -> TokenExample:
        c = self.config
        gold = c.gold_dict - 1 if c.gold_dict is not None else int(rng.integers(c.num_dicts))
        slot = int(rng.integers(c.gold_dict_size))
        sizes = self._sizes(rng, gold)
        make = self._multi if c.variant == "multi-subkey" else self._simple
        dicts, gold_key, gold_value, query, extra = make(rng, sizes, gold, slot)

        def key_text(key) -> str:
            return str(key) if c.variant == "simple" else "(" + ",".join(map(str, key)) + ")"

        lines = ["D[%d]{%s}\n" % (d + 1, ",".join(f"{key_text(k)}:{v}" for k, v in pairs))
                 for d, pairs in enumerate(dicts)]
        question = "Q" + (str(query) if c.variant == "simple" else ",".join(map(str, query))) + "="
        answer = f"{gold_value}[{gold + 1}]$"
        text = "".join(lines) + question + answer
        tokens = LOOKUP[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        targets = np.full(len(tokens), IGNORE, dtype=np.int64)
        start = len(text) - len(answer) - 1  # the "=": from there on, each target is the next token
        targets[start:-1] = tokens[start + 1:]
        meta = {
            "variant": c.variant,
            "dictionaries": [[[k, v] for k, v in pairs] for pairs in dicts],
            "gold_key": gold_key,
            "query": query,
            "gold_value": gold_value,
            "gold_dict": gold + 1,
            "answer": {"value": gold_value, "dictionary": gold + 1},
            **extra,
        }
        return TokenExample(tuple(tokens.tolist()), tuple(targets.tolist()), meta)
