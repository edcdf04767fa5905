"""In-context maps on words: the token-level in-context family of issue #6 ("Inside the model"), for task
vectors (Hendel et al. 2023; Yang et al. 2025, TVP-loss) and in-context tasks in superposition (Xiong et al.
2024): demonstrations `x → y , x → y , ... , x_query → y_query`, one map per prompt for training and
mixtures of maps for evaluation.

`get_token_task("icl-map", task="add1").example(seed, "train", i)` gives one prompt.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from seqlab.tasks.base import MIN_HASHED_PROBLEMS, SMALL_SPACE
from seqlab.core.registry import nearest
from seqlab.tasks.icl_map_functions import map_family, answer_len, apply_map, derangement, parse_maps, parse_mix
from seqlab.tasks.token_base import IGNORE, TokenConfig, TokenExample, TokenTask, register_token_task, too_few_problems

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_REDRAWS = 4000  # query words tried per prompt; the config check keeps the share told apart above 1/64
ENUMERATE_UP_TO = 4096  # query spaces this small are checked word by word when the config is built


def _told_apart(answers: np.ndarray, lengths: list[int], n: int, word_len: int) -> np.ndarray:
    """For answers (N, maps, word_len) (short answers padded), which of the N rows hold pairwise different
    answers: each answer as one integer (base n, a one-symbol answer of a longer word set apart)."""
    codes = answers @ (n ** np.arange(word_len))
    codes = codes + np.array([n ** word_len if m < word_len else 0 for m in lengths])
    codes = np.sort(codes, axis=1)
    return (np.diff(codes, axis=1) != 0).all(axis=1)


def check_queries(names: list[str], n: int, word_len: int, pi: tuple[int, ...]) -> np.ndarray | None:
    """Refuse maps that no query word tells apart, or that too few do (the query is redrawn until it does).
    Returns the words told apart, an int array (count, word_len) in lexicographic order, where there are at
    most ENUMERATE_UP_TO words to check; None for a larger space."""
    if word_len == 1 and "copy0" in names and "reverse" in names:
        raise ValueError("copy0 and reverse give the same answer on every word of 1 symbol: a query cannot tell them apart")
    for name in names:
        family, k = map_family(name)
        if family == "add{k}" and "perm" in names and all(pi[s] == (s + k) % n for s in range(n)):
            why = (f"every derangement of {n} symbols is a shift" if n <= 3
                   else f"the derangement drawn from this perm_seed is the shift by {k}: choose another perm_seed")
            raise ValueError(f"perm and {name} give the same answer on every word ({why})")
    copies = [name for name in names if name.startswith("copy")]
    if len(copies) > n:
        raise ValueError(f"{', '.join(copies)} need {len(copies)} different symbols in the query, more than the "
                         f"{n} of the alphabet")
    if n ** word_len > ENUMERATE_UP_TO:
        # Larger spaces need no count. With the cases above excluded, perm agrees with add k only on words whose
        # every symbol s has pi(s) = s + k (at most n - 2 symbols; summed over k, at most ((n-2)/n)^(word_len-1)
        # of the candidates, 0.85 at worst here) and reverse agrees with add k or perm on about n^(-word_len/2)
        # of them (none when word_len is odd), so more than a tenth are told apart (a test measures it).
        return None
    words = np.array(list(itertools.product(range(n), repeat=word_len)), dtype=np.int64)
    idx = [map_family(name)[1] for name in copies]
    at_copies = np.sort(words[:, idx], axis=1)
    words = words[(np.diff(at_copies, axis=1) != 0).all(axis=1)]  # the candidates: distinct symbols at the copies
    lengths = [answer_len(name, word_len) for name in names]
    answers = np.zeros((len(words), len(names), word_len), dtype=np.int64)
    for j, name in enumerate(names):
        answers[:, j, :lengths[j]] = apply_map(name, words, np.array(pi))
    told = _told_apart(answers, lengths, n, word_len)
    good = int(told.sum())
    if good * 64 < len(words):
        raise ValueError(f"{'no' if good == 0 else f'only {good} of the {len(words)}'} possible query words (of "
                         f"{word_len} from {n} symbols) give pairwise different answers for {', '.join(names)}: "
                         f"use more symbols, longer words or fewer maps")
    return words[told]


@functools.cache
def told_apart_words(names: tuple[str, ...], n: int, word_len: int, perm_seed: int) -> np.ndarray | None:
    """check_queries' words, once per setting."""
    return check_queries(list(names), n, word_len, derangement(n, perm_seed))


def count_prompts(c: "ICLMapConfig", names: list[str], told: np.ndarray | None, cap: int = MIN_HASHED_PROBLEMS) -> int:
    """Distinct prompts of a setting (an upper bound in a mix: the map, the demonstration words and their maps'
    order, and the query word), counted up to `cap`: a larger count is given as `cap`, so that no knob makes
    this slow."""
    n, w = c.n_symbols, c.word_len
    if told is None:  # more than ENUMERATE_UP_TO query words, a tenth of them told apart
        return cap
    queries = len(told)
    mix = parse_mix(c.mix, names) if c.mix is not None else None
    fewest = sum(mix.values()) if mix is not None else c.n_demos if c.n_demos_min is None else c.n_demos_min
    if fewest * w * math.log2(n) >= math.log2(cap):  # the demonstration words alone make cap prompts
        return cap
    if mix is not None:
        orders = math.factorial(fewest)
        for count in mix.values():
            orders //= math.factorial(count)
        return min(cap, orders * n ** (w * fewest) * queries * sum(1 for v in mix.values() if v))
    choices = 1 if c.task is not None else len(names)
    total = 0
    for m in range(fewest, c.n_demos + 1):
        total += choices * n ** (w * m) * queries
        if total >= cap:
            return cap
    return total


class ICLMapConfig(TokenConfig):
    """Knobs of the in-context maps (seqlab's choices; issue #6 names the families)."""

    maps: str = "add1,add2,copy0,copy2,reverse,perm"  # the maps in play, a comma list of names in MAPS
    n_symbols: int = Field(10, ge=2, le=26)  # the alphabet a, b, c, ...
    word_len: int = Field(3, ge=1)
    n_demos: int = Field(8, ge=0)  # demonstrations before the query (0: the zero-shot query alone)
    n_demos_min: int | None = Field(None, ge=0)  # None: exactly n_demos; else uniform in [n_demos_min, n_demos]
    task: str | None = None  # None: each prompt's map uniform among maps; a name: every prompt's map
    mix: str | None = None  # "name:count,...": demonstrations of several maps, in a random order
    score: Literal["all", "query"] = "all"  # which answers carry targets
    perm_seed: int = Field(0, ge=0)  # draws perm's derangement

    @model_validator(mode="after")
    def _check(self):
        names = parse_maps(self.maps, self.n_symbols, self.word_len)
        if self.n_demos_min is not None and self.n_demos_min > self.n_demos:
            raise ValueError(f"n_demos_min ({self.n_demos_min}) is above n_demos ({self.n_demos})")
        if self.task is not None and self.mix is not None:
            raise ValueError("task and mix are mutually exclusive: a prompt follows one map (task) or several (mix)")
        if self.task is not None and self.task not in names:
            near = nearest(self.task, names)
            hint = f"did you mean '{near}'? " if near else ""
            raise ValueError(f"task '{self.task}' is not in maps ({hint}maps: {', '.join(names)})")
        if self.mix is not None:
            parse_mix(self.mix, names)
            if self.n_demos_min is not None:
                raise ValueError("mix fixes the number of demonstrations (the sum of its counts): leave n_demos_min unset")
        told = told_apart_words(tuple(names), self.n_symbols, self.word_len, self.perm_seed)
        # Zero-shot prompts (n_demos 0) are listed and ranked for the split, however few; others split by hash.
        if (self.mix is not None or self.n_demos > 0) and (count := count_prompts(self, names, told)) < MIN_HASHED_PROBLEMS:
            raise ValueError(too_few_problems(count, "prompts", "use more symbols, longer words or more demonstrations"))
        return self


@register_token_task
class ICLMap(TokenTask):
    """In-context maps on words (issue #6): demonstrations x → y of add k, copy h, reverse or perm, then a query.

    A word is word_len symbols of an alphabet of n_symbols, written a, b, c, ... The maps (MAPS):
    `add{k}` shifts every symbol by k mod n_symbols (add1 is "next letter"); `copy{h}` is the one symbol at
    index h; `reverse` reverses the word; `perm` maps every symbol through a derangement pi of the alphabet
    (a uniform permutation without fixed points, drawn once from perm_seed with NumPy: the same pi for every
    example of a config; `derangement(n_symbols, perm_seed)`).

    A prompt (defaults: 10 symbols, words of 3, 8 demonstrations; map add1):

        tokens   c a f → d b g ,  h h a → i i b ,  ...  b e j → c f a , <eos>
        targets  · · · d b g , ·  · · · i i b , ·  ...  · · · c f a , ·   ·

    Token ids: pad 0, symbols 1 .. n (a = 1), "→" n + 1, "," n + 2, "<eos>" n + 3 (vocab_size n + 4).
    targets[t] = tokens[t + 1] from each "→" to the token before its ",": the answer's symbols and the ","
    that ends every answer, the query's too, are predicted; IGNORE elsewhere (the <eos> after the last ","
    is not: when the number of demonstrations varies, no model can tell the query's line from another's,
    so a terminator that differed after the query would be a guess). With score="query" only the query's
    answer carries targets. n_demos=0 gives the zero-shot query alone, "x → y , <eos>" (where a task
    vector is injected).

    - Training prompts (mix None): one map per prompt, `task` or uniform among `maps`; n_demos
      demonstrations (uniform in [n_demos_min, n_demos] when n_demos_min is set, for prompts longer or
      shorter than in training), and the query answered by the same map.
    - Mixed prompts (mix "name:count,..."): exactly count demonstrations of each named map, in a uniformly
      random order (n_demos and n_demos_min do not apply). The query is answered by none in particular: the
      written answer is that of a map drawn in proportion to the counts (so a mix is also a proper sequence
      distribution: its best predictor puts count/total on each map's answer), and meta "answer" holds every
      map's answer.
    - Demonstration words are uniform and independent (they may repeat each other or the query). The query
      word is uniform among the words on which all of `maps` (single-task and mixed prompts alike) give
      pairwise different answers, so an answer names the map that gave it: it is drawn with distinct symbols
      at the copy indices and uniform elsewhere and redrawn until that holds. The config is refused when no
      word (or fewer than 1 in 64 of those candidates) does so: copy0 and reverse on words of one symbol, a
      derangement that is a shift add k also in maps, more copies than symbols.

    The split (token_base.py) reads the tokens. A setting with demonstrations splits by hash, or draws the
    two streams independently from 64 bits of demonstration words on (8 words of 3 from 10 symbols: 80);
    one of fewer than 64 prompts is refused. Zero-shot prompts (n_demos 0) are few: at most len(maps) times
    the query words (about 5,000 at the defaults, 1 in 8 of them in test; training sees the others again
    and again), and where they are at most SMALL_SPACE they are listed and ranked, so that even a handful
    splits and the test split is never empty.

    meta: "maps" (the maps in play: all of `maps`), "task" (the prompt's map; None for a mix), "demos"
    ([[x, y], ...] as strings of letters), "demo_maps", "query" (the word), "answers" ({map: answer} for
    every map in play), "answer" (the prompt's map's answer; for a mix, the dict of answers), "query_map"
    (the map whose answer is written after the query), "arrows" (the token index of every "→") and
    "query_arrow" (the query's "→": where a task vector is read and written).
    """

    name = "icl-map"
    Config = ICLMapConfig

    def __init__(self, config: ICLMapConfig | None = None):
        super().__init__(config)
        c = self.config
        self.names = parse_maps(c.maps, c.n_symbols, c.word_len)
        self.mix = parse_mix(c.mix, self.names) if c.mix is not None else None
        # The mix's demonstration maps before shuffling: each name count times.
        self.mix_order = [name for name, count in (self.mix or {}).items() for _ in range(count)]
        self.pi = np.array(derangement(c.n_symbols, c.perm_seed), dtype=np.int64)
        self._copies = [map_family(name)[1] for name in self.names if name.startswith("copy")]
        self.arrow, self.comma, self.eos = c.n_symbols + 1, c.n_symbols + 2, c.n_symbols + 3

    @property
    def vocab_size(self) -> int:
        return self.config.n_symbols + 4

    @property
    def max_length(self) -> int:
        c = self.config
        pair = c.word_len + 2  # the word, "→" and the terminator, besides the answer
        if self.mix is not None:
            longest = max(answer_len(name, c.word_len) for name, count in self.mix.items() if count)
            demos = sum(count * (pair + answer_len(name, c.word_len)) for name, count in self.mix.items())
            return demos + pair + longest + 1  # + the final <eos>
        longest = max(answer_len(name, c.word_len) for name in ([c.task] if c.task else self.names))
        return (c.n_demos + 1) * (pair + longest) + 1

    def token_name(self, token: int) -> str:
        n = self.config.n_symbols
        return "<pad>" if token == 0 else LETTERS[token - 1] if token <= n else ["→", ",", "<eos>"][token - n - 1]

    def _query(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple[int, ...]]]:
        c = self.config
        for _ in range(MAX_REDRAWS):
            word = rng.integers(c.n_symbols, size=c.word_len)
            if self._copies:
                word[self._copies] = rng.choice(c.n_symbols, size=len(self._copies), replace=False)
            answers = {name: tuple(apply_map(name, word, self.pi).tolist()) for name in self.names}
            if len(set(answers.values())) == len(answers):
                return word, answers
        raise RuntimeError(f"no query word told {c.maps} apart in {MAX_REDRAWS} draws")  # the config check rules it out

    # -- the split ------------------------------------------------------------------------------------
    def problem_key(self, ex: TokenExample) -> bytes:
        """The tokens: which answers carry targets (`score`) is not part of the problem."""
        return np.asarray(ex.tokens, dtype=np.int64).tobytes()

    def problem_bits(self) -> float:
        c = self.config
        fewest = sum(self.mix.values()) if self.mix is not None else c.n_demos if c.n_demos_min is None else c.n_demos_min
        return fewest * c.word_len * math.log2(c.n_symbols)  # the demonstration words, uniform

    def _zero_shot(self) -> tuple[list[str], np.ndarray] | None:
        """(the maps a prompt may follow, the query words) of a zero-shot setting whose words are listed."""
        c = self.config
        told = told_apart_words(tuple(self.names), c.n_symbols, c.word_len, c.perm_seed)
        if self.mix is not None or c.n_demos > 0 or told is None:
            return None
        return ([c.task] if c.task is not None else self.names), told

    def small_space(self) -> int | None:
        listed = self._zero_shot()
        if listed is None or len(listed[0]) * len(listed[1]) > SMALL_SPACE:
            return None
        return len(listed[0]) * len(listed[1])

    def problem(self, k: int) -> TokenExample:
        """Zero-shot prompt k: map k // (query words), query word k % (query words), in check_queries' order.
        Every one is equally likely under `draw` (a uniform map, a query uniform among the words told apart)."""
        maps, told = self._zero_shot()
        task, word = maps[k // len(told)], told[k % len(told)]
        answers = {name: tuple(apply_map(name, word, self.pi).tolist()) for name in self.names}
        return self._write(task, [], np.zeros((0, self.config.word_len), dtype=np.int64), word, answers, task)

    # -- drawing ----------------------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator) -> TokenExample:
        c = self.config
        if self.mix is not None:
            demo_maps = [self.mix_order[j] for j in rng.permutation(len(self.mix_order))]
            query_map = demo_maps[int(rng.integers(len(demo_maps)))]  # in proportion to the counts
            task = None
        else:
            task = c.task if c.task is not None else self.names[int(rng.integers(len(self.names)))]
            lo = c.n_demos if c.n_demos_min is None else c.n_demos_min
            demo_maps = [task] * int(rng.integers(lo, c.n_demos + 1))
            query_map = task
        words = rng.integers(c.n_symbols, size=(len(demo_maps), c.word_len))
        query, answers = self._query(rng)
        return self._write(task, demo_maps, words, query, answers, query_map)

    def _write(self, task: str | None, demo_maps: list[str], words: np.ndarray, query: np.ndarray,
               answers: dict[str, tuple[int, ...]], query_map: str) -> TokenExample:
        c = self.config
        pairs = [(w.tolist(), apply_map(name, w, self.pi).tolist()) for w, name in zip(words, demo_maps)]
        pairs.append((query.tolist(), list(answers[query_map])))

        tokens: list[int] = []
        arrows: list[int] = []
        for j, (x, y) in enumerate(pairs):
            arrows.append(len(tokens) + len(x))
            tokens += [s + 1 for s in x] + [self.arrow] + [s + 1 for s in y]
            tokens.append(self.comma)
        tokens.append(self.eos)
        targets = [IGNORE] * len(tokens)
        for j, arrow in enumerate(arrows):
            if c.score == "all" or j == len(arrows) - 1:
                for t in range(arrow, arrow + len(pairs[j][1]) + 1):
                    targets[t] = tokens[t + 1]

        def text(symbols) -> str:
            return "".join(LETTERS[s] for s in symbols)

        answer_text = {name: text(a) for name, a in answers.items()}
        meta = {
            "maps": list(self.names),
            "task": task,
            "demos": [[text(x), text(y)] for x, y in pairs[:-1]],
            "demo_maps": demo_maps,
            "query": text(query),
            "answers": answer_text,
            "answer": answer_text[task] if task is not None else dict(answer_text),
            "query_map": query_map,
            "arrows": arrows,
            "query_arrow": arrows[-1],
        }
        return TokenExample(tuple(tokens), tuple(targets), meta)
