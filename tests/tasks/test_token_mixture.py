"""The mixture of token tasks: every example is its component's own example i with the ids shifted as the
docstring says (offsets and id tables recomputed here from each component's vocabulary size alone), no two
components share an id but the pad id 0, the components follow the weights, train and test share no problem,
and bad component settings are refused in one line that names the component."""

import functools
import json
import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, note, settings

from seqlab.core.errors import BadInput
from seqlab.tasks.mqar import MQAR
from seqlab.tasks.token_base import IGNORE, TokenExample, get_token_task
from seqlab.tasks.token_mixture import shift, unshift
from tests.tasks.checks_tokens import CASE_NUMBERS, check_contract, check_purity, task_of, where


# -- small settings of each token task, for random mixtures ---------------------------------------------
def mqar_knobs(r: random.Random) -> dict:
    if r.random() < 0.8:
        kv = r.randint(1, 3)
        length = 2 * r.randint(2 * kv, 2 * kv + 4)
        return {"num_kv_pairs": kv, "input_seq_len": length, "vocab_size": r.randint(max(length + 1, 9), length + 60)}
    # Without filler a setting needs more room to hold 64 sequences.
    return {"num_kv_pairs": 2, "input_seq_len": 16, "vocab_size": r.randint(17, 80), "random_non_queries": False}


def count3_knobs(r: random.Random) -> dict:
    length = r.randint(3, 12)
    return {"length": length, "seed_size": r.randint(1, length - 1), "seed_max": r.randint(2, length)}


def icl_knobs(r: random.Random) -> dict:
    return {"n_symbols": r.randint(4, 8), "word_len": r.randint(2, 3), "n_demos": r.randint(0, 3), "maps": "add1,reverse"}


def kv_knobs(r: random.Random) -> dict:
    return {"num_dicts": r.randint(1, 3), "gold_dict_size": r.randint(1, 2), "dict_size_min": 0,
            "dict_size_max": r.randint(0, 2), "key_digits_min": 1, "key_digits_max": r.randint(1, 2),
            "value_digits_min": 1, "value_digits_max": r.randint(1, 2)}


KNOBS = {"mqar": mqar_knobs, "count3": count3_knobs, "icl-map": icl_knobs, "kv-retrieval": kv_knobs}


def random_components(r: random.Random) -> list[dict]:
    out = []
    for _ in range(r.choice([1, 2, 2, 3, 4])):
        name = r.choice(sorted(KNOBS))
        weight = r.choice([1, r.randint(1, 5), round(r.uniform(0.05, 10), 3)])
        out.append({"name": name, "weight": weight, **KNOBS[name](r)})
    return out


@functools.cache
def shared_mixture(components_json: str):
    return get_token_task("token-mixture", components=json.loads(components_json))


def mixture_of(components: list[dict]):
    return shared_mixture(json.dumps(components, sort_keys=True))


def own_task(component: dict):
    """The component's task built on its own, from its settings (not from the mixture)."""
    return task_of(component["name"], {k: v for k, v in component.items() if k not in ("name", "weight")})


# -- the id mapping, recomputed from the docstring -------------------------------------------------------
def reference_offsets(vocab_sizes: list[int]) -> list[int]:
    offsets, total = [], 0
    for v in vocab_sizes:
        offsets.append(total)
        total += v - 1
    return offsets


def reference_table(vocab: int, pad: int, offset: int) -> dict[int, int]:
    """Pad to 0; the other ids, in increasing order, to offset + 1, offset + 2, ...; IGNORE to itself."""
    table = {pad: 0, IGNORE: IGNORE}
    for rank, t in enumerate(t for t in range(vocab) if t != pad):
        table[t] = offset + 1 + rank
    return table


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_a_mixture_example_is_its_components_own_example_shifted(number):
    r = random.Random(number)
    components = random_components(r)
    seed, split, i = where(r)
    note(f"components={components} at {(seed, split, i)}")
    mix = mixture_of(components)
    tasks = [own_task(c) for c in components]
    offsets = reference_offsets([t.vocab_size for t in tasks])
    assert mix.offsets == offsets and mix.vocab_size == 1 + sum(t.vocab_size - 1 for t in tasks)
    assert mix.max_length == max(t.max_length for t in tasks)

    ex = mix.example(seed, split, i)
    check_contract(mix, ex)  # every id in [0, vocab_size), targets IGNORE or an id
    k = ex.meta["component_index"]
    own = tasks[k].example(seed, split, i)
    table = reference_table(tasks[k].vocab_size, tasks[k].pad_id, offsets[k])
    assert list(ex.tokens) == [table[t] for t in own.tokens]
    assert list(ex.targets) == [table[y] for y in own.targets]
    assert ex.scored == own.scored
    owned = range(offsets[k] + 1, offsets[k] + tasks[k].vocab_size)
    assert all(t == 0 or t in owned for t in ex.tokens + ex.targets if t != IGNORE)
    assert ex.meta == {**own.meta, "component": components[k]["name"], "component_index": k, "offset": offsets[k]}
    assert mix.own_example(ex) == TokenExample(own.tokens, own.targets, ex.meta)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_components_never_share_an_id_but_the_pad_id(number):
    r = random.Random(number)
    components = random_components(r)
    note(f"components={components}")
    mix = mixture_of(components)
    tasks = [own_task(c) for c in components]
    offsets = reference_offsets([t.vocab_size for t in tasks])
    seen: dict[int, int] = {}
    for k, task in enumerate(tasks):
        local = np.arange(task.vocab_size)
        images = mix.to_mixture(k, local).tolist()
        table = reference_table(task.vocab_size, task.pad_id, offsets[k])
        assert images == [table[t] for t in local.tolist()]
        assert mix.to_component(k, images).tolist() == local.tolist()
        for t, g in zip(local.tolist(), images):
            if g == 0:
                assert t == task.pad_id and mix.component_of(0) is None
                continue
            assert g not in seen, f"id {g} of component {k} is also component {seen[g]}'s"
            seen[g] = k
            assert mix.component_of(g) == k
    assert sorted(seen) == list(range(1, mix.vocab_size))  # every id but 0 belongs to exactly one component
    for bad in (-1, mix.vocab_size):
        with pytest.raises(BadInput, match="outside this mixture's vocabulary"):
            mix.component_of(bad)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=True)
@given(CASE_NUMBERS)
def test_shift_follows_the_table_for_any_pad_id(number):
    # No token task has a pad id other than 0 today; the mapping must not assume it.
    r = random.Random(number)
    vocab = r.choice([2, 3, r.randint(2, 40), r.randint(2, 3000)])
    pad, offset = r.randrange(vocab), r.choice([0, r.randint(0, 10**6)])
    table = reference_table(vocab, pad, offset)
    ids = [r.choice([IGNORE, *range(vocab)]) for _ in range(50)] + list(range(vocab))
    got = shift(np.array(ids), pad, offset).tolist()
    assert got == [table[t] for t in ids]
    assert unshift(np.array(got), pad, offset).tolist() == ids


def test_a_component_with_another_pad_id_maps_it_to_0(monkeypatch):
    monkeypatch.setattr(MQAR, "pad_id", 5)
    mix = get_token_task("token-mixture", components=[{"name": "count3", "length": 8, "seed_size": 3, "seed_max": 8},
                                                      {"name": "mqar", "vocab_size": 32, "input_seq_len": 16,
                                                       "num_kv_pairs": 2}])
    assert mix.offsets == [0, 7] and mix.vocab_size == 1 + 7 + 31
    mqar = MQAR(get_token_task("mqar", vocab_size=32, input_seq_len=16, num_kv_pairs=2).config)
    table = reference_table(32, 5, 7)
    tokens, targets = mix.component_batch(3, "test", 0, 40, "mqar")
    want_tokens, want_targets = mqar.batch(3, "test", 0, 40)
    assert tokens.tolist() == [[table[t] for t in row] for row in want_tokens.tolist()]
    assert targets.tolist() == [[table[t] for t in row] for row in want_targets.tolist()]
    assert (want_tokens == 5).any() and set(tokens[want_tokens == 5].tolist()) == {0}


def test_the_mix_follows_the_weights():
    # Chi-square over 4000 draws against the 1 - 1e-4 quantile for its degrees of freedom (1, 2, 3).
    quantile = {1: 15.14, 2: 18.42, 3: 21.11}
    for weights, seed in (([1, 1], 0), ([3, 1], 1), ([0.2, 5, 1], 2), ([1, 2, 3, 4], 3)):
        mix = get_token_task("token-mixture", components=[
            {"name": "count3", "weight": w, "length": 6 + k, "seed_size": 2, "seed_max": 4} for k, w in enumerate(weights)])
        n = 4000
        counts = Counter(mix.choose(seed, "train", i) for i in range(n))
        expected = [n * w / sum(weights) for w in weights]
        chi2 = sum((counts[k] - e) ** 2 / e for k, e in enumerate(expected))
        assert chi2 < quantile[len(weights) - 1], (weights, counts)
        # The choice is the example's: its meta and its ids say so.
        for i in range(300):
            ex = mix.example(seed, "train", i)
            assert ex.meta["component_index"] == mix.choose(seed, "train", i)
            assert {mix.component_of(t) for t in ex.tokens} <= {None, ex.meta["component_index"]}


SMALL_MIX = [{"name": "count3", "length": 2, "seed_size": 1, "seed_max": 2},  # 2 sequences: one train, one test
             {"name": "mqar", "vocab_size": 9, "input_seq_len": 4, "num_kv_pairs": 1, "weight": 2},  # split by hash
             {"name": "icl-map", "n_demos": 0, "maps": "add1", "n_symbols": 2, "word_len": 1},  # listed
             {"name": "count3", "length": 10, "seed_size": 5, "seed_max": 8}]  # hashed


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_train_and_test_share_no_problem(seed):
    mix = get_token_task("token-mixture", components=SMALL_MIX)
    tasks = [own_task(c) for c in SMALL_MIX]

    def keys(split: str, n: int) -> set:
        out = set()
        for i in range(n):
            k = mix.example(seed, split, i).meta["component_index"]
            out.add((k, tasks[k].problem_key(tasks[k].example(seed, split, i))))
        return out

    train, test = keys("train", 2000), keys("test", 500)
    assert {k for k, _ in test} == set(range(len(SMALL_MIX))) and not train & test
    ex = mix.example(seed, "test", 3)
    k = ex.meta["component_index"]
    assert mix.problem_key(ex) == k.to_bytes(4, "little") + tasks[k].problem_key(tasks[k].example(seed, "test", 3))


def test_examples_are_pure_and_batches_padded_with_0():
    cfg = {"components": [{"name": "mqar", "vocab_size": 40, "input_seq_len": 16, "num_kv_pairs": 2},
                          {"name": "kv-retrieval", "num_dicts": 2, "weight": 0.5}]}
    check_purity("token-mixture", cfg)  # same seed, same examples and batch, from any object; padding 0 / IGNORE
    a, b = get_token_task("token-mixture", **cfg), get_token_task("token-mixture", **cfg)
    for x, y in zip(a.batch(5, "train", 10, 32), b.batch(5, "train", 10, 32)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.batch(5, "train", 10, 32)[0], a.batch(6, "train", 10, 32)[0])


def test_a_component_batch_is_what_the_mixture_shows_where_it_picks_that_component():
    comps = [{"name": "mqar", "vocab_size": 40, "input_seq_len": 16, "num_kv_pairs": 2},
             {"name": "kv-retrieval", "num_dicts": 2}]
    mix = get_token_task("token-mixture", components=comps)
    tokens, targets = mix.batch(2, "test", 0, 60)
    rows = mix.component_indices(2, "test", 0, 60)
    assert set(rows.tolist()) == {0, 1}
    for k, name in enumerate(["mqar", "kv-retrieval"]):
        own = own_task(comps[k])
        table = reference_table(own.vocab_size, own.pad_id, mix.offsets[k])
        got_tokens, got_targets = mix.component_batch(2, "test", 0, 60, name)
        want_tokens, want_targets = own.batch(2, "test", 0, 60)
        assert got_tokens.shape == (60, own.max_length)
        assert got_tokens.tolist() == [[table[t] for t in row] for row in want_tokens.tolist()]
        assert got_targets.tolist() == [[table[t] for t in row] for row in want_targets.tolist()]
        width = own.max_length
        assert np.array_equal(tokens[rows == k, :width], got_tokens[rows == k])
        assert np.array_equal(targets[rows == k, :width], got_targets[rows == k])
        assert (tokens[rows == k, width:] == 0).all() and (targets[rows == k, width:] == IGNORE).all()
    assert np.array_equal(mix.component_batch(2, "test", 0, 5, 1)[0], mix.component_batch(2, "test", 0, 5, "kv-retrieval")[0])
    with pytest.raises(BadInput, match=r"no component 'count3' in this mixture \(components: mqar, kv-retrieval\)"):
        mix.component_batch(2, "test", 0, 5, "count3")


def test_a_task_twice_is_told_apart_by_its_index():
    mix = get_token_task("token-mixture", components=["count3", {"name": "count3", "length": 8, "seed_size": 2, "seed_max": 8}, "mqar"])
    assert mix.labels == ["count3#0", "count3#1", "mqar"] and mix.offsets == [0, 63, 70]
    assert mix.token_name(0) == "<pad>" and mix.token_name(64) == "count3#1:1" and mix.token_name(71) == "mqar:1"
    assert mix.config.components[0] == {"name": "count3", "weight": 1.0, "length": 64, "seed_size": 16, "seed_max": 16}


WHERE = "task.components"
BAD = [
    ([], f"invalid value for '{WHERE}': a mixture needs at least one component (got [])"),
    ("mqar", f"invalid value for '{WHERE}': Input should be a valid list (got 'mqar')"),
    (["count3", {"name": "token-mixture"}], f"invalid value for '{WHERE}[1].name': a component cannot itself be a "
                                            f"token-mixture; list its components here"),
    (["count3", {"name": "mqr"}], f"invalid value for '{WHERE}[1].name': unknown token task 'mqr' (did you mean 'mqar'?)"),
    ([{"weight": 2}], f"invalid value for '{WHERE}[0]': a component is a mapping with a token task's name, optionally "
                      f"a weight and that task's settings (got {{'weight': 2}})"),
    (["count3", {"name": "mqar", "n_pairs": 3}],
     f"unknown key '{WHERE}[1].n_pairs' (did you mean '{WHERE}[1].num_kv_pairs'?)"),
    (["count3", {"name": "mqar", "num_kv_pairs": 0}],
     f"invalid value for '{WHERE}[1].num_kv_pairs': Input should be greater than or equal to 1 (got 0)"),
    (["count3", {"name": "mqar", "input_seq_len": 15}],
     f"invalid value for '{WHERE}[1]': input_seq_len must be even (Zoology asserts it), got 15"),
    (["count3", {"name": "icl-map", "maps": "add1,nope"}],
     f"invalid value for '{WHERE}[1]': unknown map 'nope' in maps (maps are add{{k}}, copy{{h}}, reverse, perm)"),
    (["count3", {"name": "mqar", "weight": 0}], f"invalid value for '{WHERE}[1].weight': a weight is a finite number above 0 (got 0)"),
    ([{"name": "mqar", "weight": "heavy"}], f"invalid value for '{WHERE}[0].weight': a weight is a finite number above 0 (got 'heavy')"),
]


@pytest.mark.parametrize("components, message", BAD)
def test_a_bad_component_is_refused_in_one_line_naming_it(components, message):
    with pytest.raises(BadInput) as e:
        get_token_task("token-mixture", components=components)
    assert str(e.value) == message and "\n" not in message


def test_a_bad_component_on_the_command_line_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "task.name=token-mixture", 'task.components=["count3", {"name": "mqar", "n_pairs": 3}]',
                       "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.strip() == f"error: unknown key '{WHERE}[1].n_pairs' (did you mean '{WHERE}[1].num_kv_pairs'?)"
    assert not (tmp_path / "run").exists()


def test_sample_lists_the_mixture_and_its_examples(cli):
    comps = '[{"name": "mqar", "vocab_size": 32, "input_seq_len": 16, "num_kv_pairs": 2}, "count3"]'
    code, out, err = cli("sample", "token-mixture", f"components={comps}", "--n", "6", "--seed", "4", "--json")
    assert code == 0, err
    mix = get_token_task("token-mixture", components=json.loads(comps))
    for i, rec in enumerate(map(json.loads, out.splitlines())):
        ex = mix.example(4, "train", i)
        assert rec["task"] == "token-mixture" and rec["meta"]["tokens"] == list(ex.tokens)
        assert rec["prompt"].startswith(ex.meta["component"] + ": ")
    code, out, _ = cli("tasks")
    assert code == 0 and any(line.startswith("token-mixture ") for line in out.splitlines())


TINY_RUN = ["task.name=token-mixture",
            'task.components=[{"name": "mqar", "vocab_size": 32, "input_seq_len": 16, "num_kv_pairs": 2, "weight": 2}, '
            '{"name": "count3", "length": 10, "seed_size": 4, "seed_max": 8}]',
            "model.n_layers=1", "model.d_model=16", "model.n_heads=2", "train.batch_size=8", "train.steps=6",
            "train.eval_every=3", "train.eval_n=8", "train.log_every=3", "train.checkpoint_every=6", "train.warmup=2",
            "train.threads=1"]


def test_train_and_eval_a_mixture_through_the_cli(cli, tmp_path):
    run = tmp_path / "mix"
    code, _, err = cli("train", *TINY_RUN, "--out", run, "--quiet")
    assert code == 0, err
    task = json.loads((run / "config.json").read_text())["task"]
    assert task["name"] == "token-mixture" and task["components"][1] == {
        "name": "count3", "weight": 1.0, "length": 10, "seed_size": 4, "seed_max": 8}
    code, out, err = cli("eval", run, "--n", "40", "--json")
    assert code == 0, err
    result = json.loads(out)
    parts = result["by_component"]
    assert set(parts) == {"mqar", "count3"} and sum(p["n"] for p in parts.values()) == result["n"] == 40
    assert sum(p["n_scored"] for p in parts.values()) == result["n_scored"]
    assert math.isclose(sum(p["accuracy"] * p["n_scored"] for p in parts.values()), result["accuracy"] * result["n_scored"])
    code, out, err = cli("eval", run, "--n", "40")
    assert code == 0 and "mqar: accuracy" in out and "count3: accuracy" in out
