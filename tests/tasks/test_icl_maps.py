"""In-context maps (issue #6): every prompt read back from its tokens alone (split on "," and "→", the answers
recomputed by maps written here on strings of letters), the targets, the scored positions and meta checked
against that reading; the query's answers pairwise different; the configs refused exactly when a brute-force
count over query words says they must be; the distributions (query uniform among the words told apart,
maps, mixes, numbers of demonstrations) and the derangement checked on their own."""

import itertools
import json
import math
import random
import string
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.token_base import IGNORE, get_token_task
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


def ref_derangement(n: int, seed: int) -> str:
    """The image of a, b, c, ... under perm's derangement: NumPy permutations from the seed until one fixes
    no symbol (the specification's procedure)."""
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n).tolist()
        if all(p[i] != i for i in range(n)):
            return "".join(string.ascii_lowercase[j] for j in p)


def ref_answer(name: str, word: str, n: int, image: str) -> str:
    """The maps on strings: add k by a rotated alphabet, perm by its image, copy by indexing."""
    alphabet = string.ascii_lowercase[:n]
    if name == "reverse":
        return "".join(reversed(word))
    if name == "perm":
        return word.translate(str.maketrans(alphabet, image))
    if name.startswith("copy"):
        return word[int(name[len("copy"):])]
    k = int(name[len("add"):])
    return word.translate(str.maketrans(alphabet, alphabet[k:] + alphabet[:k]))


def all_names(n: int, w: int) -> list[str]:
    return ["reverse", "perm", *(f"add{k}" for k in range(1, n)), *(f"copy{h}" for h in range(w))]


def must_refuse(names: list[str], n: int, w: int, image: str) -> bool:
    """Whether a config must be refused: a pair that never differs, more copies than symbols, or (words
    few enough to list) fewer than 1 in 64 of the query candidates (distinct letters at the copy indices)
    whose answers are pairwise different."""
    alphabet = string.ascii_lowercase[:n]
    copies = [int(m[4:]) for m in names if m.startswith("copy")]
    if w == 1 and {"copy0", "reverse"} <= set(names):
        return True
    for m in names:
        if m.startswith("add") and "perm" in names and image == ref_answer(m, alphabet, n, image):
            return True
    if len(copies) > n:
        return True
    if n**w > 4096:
        return False
    candidates = told = 0
    for letters in itertools.product(alphabet, repeat=w):
        word = "".join(letters)
        if len({word[h] for h in copies}) < len(copies):
            continue
        candidates += 1
        told += len({ref_answer(m, word, n, image) for m in names}) == len(names)
    return told * 64 < candidates


def too_few_prompts(cfg: dict, names: list[str], n: int, w: int, image: str) -> bool:
    """Whether a setting with demonstrations has fewer than 64 distinct prompts (then refused: too few to split
    by hash), counted by hand: the map, the demonstration words (the maps' order, in a mix) and the query words
    told apart (all n^w words where they are too many to list). Zero-shot settings are listed, never refused."""
    mix = {m: int(c) for m, c in (e.split(":") for e in cfg["mix"].split(","))} if cfg.get("mix") else None
    n_demos = cfg.get("n_demos", 8)
    if mix is None and n_demos == 0:
        return False
    if n**w > 4096:
        return False  # n^w > 4096 words, a tenth of them told apart, make more than 64 prompts
    copies = [int(m[4:]) for m in names if m.startswith("copy")]
    queries = sum(1 for letters in itertools.product(string.ascii_lowercase[:n], repeat=w)
                  if len({letters[h] for h in copies}) == len(copies)
                  and len({ref_answer(m, "".join(letters), n, image) for m in names}) == len(names))
    if mix is not None:
        total = sum(mix.values())
        orders = math.factorial(total) // math.prod(math.factorial(c) for c in mix.values())
        return orders * n ** (w * total) * queries * sum(1 for c in mix.values() if c) < 64
    lo = cfg.get("n_demos_min", n_demos)
    choices = 1 if cfg.get("task") else len(names)
    return choices * sum(n ** (w * m) for m in range(lo, n_demos + 1)) * queries < 64


def knobs(r: random.Random) -> dict:
    if r.random() < 0.05:
        return {}
    n = r.choice([2, 3, 4, 10, 26, r.randint(2, 26)])
    w = r.choice([1, 2, 3, r.randint(1, 7)])
    pool = all_names(n, w)
    names = r.sample(pool, r.randint(1, min(len(pool), 7)))
    cfg = {"maps": ",".join(names), "n_symbols": n, "word_len": w, "n_demos": r.choice([0, 1, r.randint(0, 12)]),
           "score": r.choice(["all", "query"]), "perm_seed": r.choice([0, 1, r.randint(0, 10**6)])}
    mode = r.random()
    if mode < 0.3:
        cfg["task"] = r.choice(names)
    elif mode < 0.6:
        counts = {m: r.randint(0, 4) for m in r.sample(names, r.randint(1, len(names)))}
        if not sum(counts.values()):
            counts[next(iter(counts))] = 1
        cfg["mix"] = ",".join(f"{m}:{c}" for m, c in counts.items())
    if "mix" not in cfg and r.random() < 0.3:
        cfg["n_demos_min"] = r.randint(0, cfg["n_demos"])
    return cfg


def settings_of(cfg: dict) -> tuple:
    """The knobs with the defaults filled in, read from the config dict alone."""
    maps = cfg.get("maps", "add1,add2,copy0,copy2,reverse,perm").split(",")
    mix = None
    if cfg.get("mix"):
        mix = {m: int(c) for m, c in (e.split(":") for e in cfg["mix"].split(","))}
    return maps, cfg.get("n_symbols", 10), cfg.get("word_len", 3), cfg.get("n_demos", 8), mix


def read(names: list[str], w: int) -> list[tuple[str, str]]:
    """The (word, answer) pairs of a prompt, from its token names: ", <eos>" once at the end, pairs split on ","."""
    assert names[-2:] == [",", "<eos>"] and names.count("<eos>") == 1 and "<pad>" not in names
    pairs = []
    for segment in " ".join(names[:-2]).split(" , "):
        parts = segment.split(" ")
        assert parts.count("→") == 1, segment
        x, y = parts[:parts.index("→")], parts[parts.index("→") + 1:]
        assert len(x) == w and y and all(len(s) == 1 and s.isalpha() for s in x + y), segment
        pairs.append(("".join(x), "".join(y)))
    return pairs


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_every_prompt_reads_back_and_every_answer_is_recomputed(number):
    r = random.Random(number)
    cfg = knobs(r)
    seed, split, i = where(r)
    note(f"cfg={cfg} at {(seed, split, i)}")
    maps, n, w, n_demos, mix = settings_of(cfg)
    image = ref_derangement(n, cfg.get("perm_seed", 0))
    refuse = must_refuse(maps, n, w, image) or too_few_prompts(cfg, maps, n, w, image)
    try:
        task = task_of("icl-map", cfg)
    except BadInput:
        assert refuse
        return
    assert not refuse

    # Token ids: pad 0, a .. the n-th letter, "→", ",", "<eos>".
    assert task.vocab_size == n + 4
    assert [task.token_name(t) for t in range(n + 4)] == ["<pad>", *string.ascii_lowercase[:n], "→", ",", "<eos>"]
    ex = task.example(seed, split, i)
    scored = check_contract(task, ex)
    tokens, targets = list(ex.tokens), list(ex.targets)
    names = [task.token_name(t) for t in tokens]
    pairs = read(names, w)
    demos, (query, written) = pairs[:-1], pairs[-1]
    m = ex.meta

    # The maps of the prompt: one task, or exactly the mix's counts.
    assert m["maps"] == maps and len(m["demo_maps"]) == len(demos)
    if mix is None:
        assert m["task"] == cfg.get("task", m["task"]) and m["task"] in maps and m["query_map"] == m["task"]
        assert set(m["demo_maps"]) <= {m["task"]}
        assert (cfg.get("n_demos_min", n_demos) <= len(demos) <= n_demos)
    else:
        assert m["task"] is None and Counter(m["demo_maps"]) == {k: c for k, c in mix.items() if c}
        assert mix[m["query_map"]] > 0
    for (x, y), name in zip(demos, m["demo_maps"]):
        assert y == ref_answer(name, x, n, image)

    # The query: every map's answer recomputed, pairwise different; the written one is the query map's.
    answers = {name: ref_answer(name, query, n, image) for name in maps}
    assert len(set(answers.values())) == len(maps)
    assert written == answers[m["query_map"]]
    assert all(query[h] != query[g] for h, g in itertools.combinations([int(a[4:]) for a in maps if a[:4] == "copy"], 2))

    # Targets: from each "→" through the answer, the next token; only the query's with score="query".
    arrows = [t for t, s in enumerate(names) if s == "→"]
    expected = [IGNORE] * len(tokens)
    for j, (a, (_, y)) in enumerate(zip(arrows, pairs)):
        if cfg.get("score", "all") == "all" or j == len(pairs) - 1:
            for t in range(a, a + len(y) + 1):
                expected[t] = tokens[t + 1]
    assert targets == expected
    terminators = [names[a + len(y) + 1] for a, (_, y) in zip(arrows, pairs)]
    assert terminators == [","] * (len(demos) + 1) and scored[-1] == len(tokens) - 3

    # meta.
    assert m["demos"] == [[x, y] for x, y in demos] and m["query"] == query and m["answers"] == answers
    assert m["answer"] == (answers if mix is not None else answers[m["task"]])
    assert m["arrows"] == arrows and m["query_arrow"] == arrows[-1] == len(tokens) - len(written) - 3

    # The longest prompt the knobs allow.
    length = {name: 1 if name.startswith("copy") else w for name in maps}
    if mix is not None:
        longest = sum(c * (w + 2 + length[k]) for k, c in mix.items()) + w + 2 + max(length[k] for k, c in mix.items() if c) + 1
    else:
        longest = (n_demos + 1) * (w + 2 + max(length[k] for k in ([cfg["task"]] if "task" in cfg else maps))) + 1
    assert task.max_length == longest >= len(tokens)


@pytest.mark.parametrize("cfg", [
    {}, {"task": "copy0"}, {"n_demos_min": 2, "n_demos": 5}, {"mix": "add1:2,copy2:3"}, {"mix": "copy0:2,reverse:0"},
    {"mix": "copy0:1,reverse:1"}, {"n_demos": 0}, {"maps": "copy0,copy1", "word_len": 2, "n_symbols": 3},
    {"word_len": 1, "maps": "add1,perm,copy0", "n_demos": 4, "score": "query"},
])
def test_max_length_is_reached_and_never_exceeded(cfg):
    task = get_token_task("icl-map", **cfg)
    lengths = [len(task.example(0, "train", i).tokens) for i in range(400)]
    assert max(lengths) == task.max_length


def test_defaults():
    c = get_token_task("icl-map").config
    assert (c.maps, c.n_symbols, c.word_len, c.n_demos, c.n_demos_min) == ("add1,add2,copy0,copy2,reverse,perm", 10, 3, 8, None)
    assert (c.task, c.mix, c.score, c.perm_seed) == (None, None, "all", 0)


def test_the_layout_is_the_docstrings():
    task = get_token_task("icl-map", task="add1", n_demos=2)
    prompt, target = task.render(task.example(0, "train", 0))
    def shape(text: str) -> str:
        return " ".join("x" if len(s) == 1 and s.isalpha() else s for s in text.split())

    assert shape(prompt) == "x x x → x x x , x x x → x x x , x x x → x x x , <eos>"
    assert shape(target) == "x x x , x x x , x x x ,"


def test_zero_shot_is_the_query_alone():
    task = get_token_task("icl-map", n_demos=0)
    for i in range(200):
        ex = task.example(2, "test", i)
        y = ex.meta["answers"][ex.meta["task"]]
        assert len(ex.tokens) == 3 + 1 + len(y) + 2 and ex.meta["demos"] == [] and ex.meta["query_arrow"] == 3
        assert ex.scored == list(range(3, 3 + len(y) + 1)) and ex.targets[-3] == task.vocab_size - 2  # ","


@pytest.mark.parametrize("n", range(2, 27))
def test_the_derangement_has_no_fixed_point_and_depends_only_on_perm_seed(n):
    alphabet = string.ascii_lowercase[:n]
    for seed in range(12):
        image = ref_derangement(n, seed)
        assert sorted(image) == list(alphabet) and all(a != b for a, b in zip(alphabet, image))
    if n < 4:
        return
    images = set()
    for seed in range(6):
        seen = set()
        configs = ({"maps": "perm"}, {"maps": "perm,reverse", "word_len": 4, "n_demos": 2},
                   {"maps": "copy0,perm", "task": "perm"})
        for cfg in configs:
            task = get_token_task("icl-map", n_symbols=n, perm_seed=seed, **cfg)
            seen.add("".join(alphabet[j] for j in task.pi))
            for i in range(3):  # and every perm answer is that image
                ex = task.example(seed, "train", i)
                assert ex.meta["answers"]["perm"] == ref_answer("perm", ex.meta["query"], n, ref_derangement(n, seed))
        assert seen == {ref_derangement(n, seed)}
        images |= seen
    assert len(images) > 1  # the seed matters


@pytest.mark.parametrize("cfg, valid", [
    # copies need x0 != x1: the 6 words of two different letters of abc
    ({"maps": "copy0,copy1,add1", "n_symbols": 3, "word_len": 2}, [a + b for a in "abc" for b in "abc" if a != b]),
    # reverse and add2 agree on the 4 words yx with y = x + 2 mod 4
    ({"maps": "reverse,add2", "n_symbols": 4, "word_len": 2},
     [a + b for a in "abcd" for b in "abcd" if (ord(b) - ord(a)) % 4 != 2]),
])
def test_the_query_is_uniform_among_the_words_told_apart(cfg, valid):
    # The generator's law (`draw`); a split keeps the prompts of its own problems (below).
    task = get_token_task("icl-map", n_demos=0, **cfg)
    n = 6000
    rng = np.random.default_rng(5)
    counts = Counter(task.draw(rng).meta["query"] for i in range(n))
    assert set(counts) == set(valid)
    p = 1 / len(valid)
    assert all(abs(counts[v] / n - p) < 5 * math.sqrt(p * (1 - p) / n) for v in valid)
    # These zero-shot spaces are listed (maps x words) and ranked: the splits partition them, 1 in 8 in test.
    space = {(m, w) for m in cfg["maps"].split(",") for w in valid}
    assert task.small_space() == len(space)
    got = {split: {(ex.meta["task"], ex.meta["query"]) for ex in (task.example(5, split, i) for i in range(600))}
           for split in ("train", "test")}
    assert not got["train"] & got["test"] and got["train"] | got["test"] == space
    assert len(got["test"]) == max(1, round(len(space) / 8))


def test_training_maps_are_uniform():
    task = get_token_task("icl-map")
    n = 6000
    counts = Counter(task.example(0, "train", i).meta["task"] for i in range(n))
    p = 1 / 6
    assert set(counts) == set(task.names)
    assert all(abs(counts[k] / n - p) < 5 * math.sqrt(p * (1 - p) / n) for k in task.names)  # 5 sd: 0.024 here


def test_mix_order_is_uniform_and_the_written_answer_follows_the_counts():
    task = get_token_task("icl-map", mix="add1:3,perm:1")
    n = 4000
    exs = [task.example(1, "test", i) for i in range(n)]
    where_perm = Counter(ex.meta["demo_maps"].index("perm") for ex in exs)
    assert all(abs(where_perm[j] / n - 1 / 4) < 5 * math.sqrt(3 / 16 / n) for j in range(4))
    share = sum(ex.meta["query_map"] == "add1" for ex in exs) / n
    assert abs(share - 3 / 4) < 5 * math.sqrt(3 / 16 / n)
    assert all(ex.meta["answer"] == ex.meta["answers"] and len(ex.meta["answers"]) == 6 for ex in exs[:50])


def test_n_demos_min_is_uniform():
    task = get_token_task("icl-map", n_demos_min=2, n_demos=5)
    n = 4000
    counts = Counter(len(task.example(3, "train", i).meta["demos"]) for i in range(n))
    assert set(counts) == {2, 3, 4, 5} and all(abs(counts[d] / n - 1 / 4) < 5 * math.sqrt(3 / 16 / n) for d in counts)


@pytest.mark.parametrize("n, w, seed", [(26, 3, s) for s in range(4)] + [(17, 3, 0), (9, 4, 1), (5, 6, 2), (4, 7, 3)])
def test_large_query_spaces_tell_most_candidates_apart(n, w, seed):
    # Beyond 4096 words the config check counts nothing: all adds, perm and reverse (the worst case) still tell
    # apart more than a tenth of the candidates, as the comment in check_queries argues.
    names = [m for m in all_names(n, w) if not m.startswith("copy")]
    image = ref_derangement(n, seed)
    if must_refuse(names, n, w, image):
        pytest.skip("the derangement is a shift")
    r = random.Random(seed)
    words = ["".join(r.choice(string.ascii_lowercase[:n]) for _ in range(w)) for _ in range(2000)]
    told = sum(len({ref_answer(m, x, n, image) for m in names}) == len(names) for x in words)
    assert told / len(words) > 0.1
    get_token_task("icl-map", maps=",".join(names), n_symbols=n, word_len=w, perm_seed=seed).example(0, "train", 0)


def test_purity():
    check_purity("icl-map", {})
    check_purity("icl-map", {"mix": "add1:2,copy0:3,perm:1", "score": "query"})
    check_purity("icl-map", {"n_demos_min": 1, "n_demos": 6, "task": "reverse", "n_symbols": 26, "word_len": 5})


@pytest.mark.parametrize("params, message", [
    ({"maps": "add1,revers"}, "unknown map 'revers' in maps \\(did you mean 'reverse'\\?\\)"),
    ({"maps": "add1,zzz"}, "unknown map 'zzz' in maps \\(maps are add\\{k\\}, copy\\{h\\}, reverse, perm\\)"),
    ({"maps": "add01"}, "unknown map 'add01'.*did you mean"),
    ({"maps": "add0,perm"}, "map 'add0': k must be 1 .. 9"),
    ({"maps": "add10,perm"}, "map 'add10': k must be 1 .. 9"),
    ({"maps": "copy3"}, "map 'copy3': the index must be 0 .. 2 for words of 3 symbols"),
    ({"maps": "perm,perm"}, "'perm' is listed twice"),
    ({"mix": "add1:2,add3:1"}, "mix names 'add3', which is not in maps \\(did you mean"),
    ({"mix": "add1:2,add1:1"}, "mix names 'add1' twice"),
    ({"mix": "add1"}, "must be name:count"),
    ({"mix": "add1:-1"}, "must be name:count"),
    ({"mix": "add1:0"}, "at least one demonstration"),
    ({"mix": "add1:2", "n_demos_min": 1}, "leave n_demos_min unset"),
    ({"task": "add1", "mix": "add2:3"}, "task and mix are mutually exclusive"),
    ({"task": "add3"}, "task 'add3' is not in maps"),
    ({"n_demos_min": 9}, "n_demos_min \\(9\\) is above n_demos \\(8\\)"),
    ({"word_len": 1, "maps": "copy0,reverse"}, "copy0 and reverse give the same answer on every word of 1 symbol"),
    ({"n_symbols": 2, "maps": "add1,perm"}, "perm and add1 give the same answer on every word \\(every derangement"),
    ({"n_symbols": 2, "word_len": 3, "maps": "copy0,copy1,copy2"}, "need 3 different symbols"),
    ({"n_symbols": 2, "word_len": 2, "maps": "copy0,copy1,reverse,add1"}, "no possible query words \\(of 2 from 2 symbols\\)"),
    ({"n_symbols": 27}, "task.n_symbols"),
    ({"n_symbols": 1, "maps": "reverse"}, "task.n_symbols"),
    ({"score": "demos"}, "task.score"),
    ({"n_demo": 3}, "did you mean 'task.n_demos'"),
])
def test_bad_knobs_are_refused(params, message):
    with pytest.raises(BadInput, match=message):
        get_token_task("icl-map", **params)


def test_a_derangement_equal_to_a_shift_is_refused_for_that_seed():
    image = {seed: ref_derangement(4, seed) for seed in range(200)}
    seed = next(s for s, im in image.items() if im == "bcda")  # the shift by 1
    with pytest.raises(BadInput, match="derangement drawn from this perm_seed is the shift by 1"):
        get_token_task("icl-map", n_symbols=4, maps="add1,perm", perm_seed=seed)
    get_token_task("icl-map", n_symbols=4, maps="add2,perm", perm_seed=seed)


def test_the_command_line_lists_and_samples_it(cli):
    code, out, _ = cli("tasks", "--json")
    assert code == 0 and any(json.loads(line)["name"] == "icl-map" for line in out.splitlines())
    code, out, _ = cli("sample", "icl-map", "--n", "3")
    assert code == 0 and len(out.strip().splitlines()) == 3
    code, out, _ = cli("sample", "icl-map", "mix=add1:2,copy0:2", "--n", "2", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["task"] for r in records] == ["icl-map"] * 2 and records[0]["meta"]["task"] is None
    code, _, err = cli("sample", "icl-map", "maps=add1,revrse", "--n", "1")
    assert code == 2 and "did you mean 'reverse'" in err and "Traceback" not in err
