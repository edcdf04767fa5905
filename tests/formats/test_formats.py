"""Formats for arithmetic: every option combination, checked by un-rendering the text by hand.

For addition under each combination of reverse_output, reverse_operands, zero_pad, index_hints and
position_ids (standard, abacus, coupled):
- exactly the documented combinations are rejected with BadInput;
- (1) the prompt and answer text, un-rendered here, give back meta's a, b and answer;
- (2) collate's loss mask covers exactly the answer and its EOS, with next-token targets;
- (3) coupled ids match digits of equal significance; abacus ids count within an operand;
- (4) a training rng shifts every digit id by one offset in [0, max_offset];
- (5) each index hint names its digit's significance (units get HINTS[offset]).
"""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.core.configs import parse_config
from seqlab.data.text import IGNORE, collate
from seqlab.core.errors import BadInput
from seqlab.formats.format import HINTS, Format, FormatConfig
from seqlab.tasks import Example, get
from seqlab.formats.tokenizer import BOS, EOS, PAD

KEYS = ("reverse_output", "reverse_operands", "zero_pad", "index_hints")
ALL = [dict(zip(KEYS, flags), position_ids=pos)
       for flags in itertools.product([False, True], repeat=4) for pos in ("standard", "abacus", "coupled")]


def rejected(o) -> bool:
    return (o["index_hints"] and o["position_ids"] != "standard") or \
        (o["position_ids"] == "coupled" and not o["reverse_output"])


VALID = [o for o in ALL if not rejected(o)]


def label(o) -> str:
    return "-".join([o["position_ids"]] + [k for k in KEYS if o[k]])


def make(task, **opts) -> Format:
    return Format(parse_config(FormatConfig, opts, prefix="format."), task)


def split_prompt(text: str, op: str) -> tuple[str, str]:
    assert text.endswith("=") and text.count("=") == 1 and text.count(op) == 1
    a, b = text[:-1].split(op)
    return a, b


def significances(n: int, reversed_: bool) -> list[int]:
    """Significance of each of n digits in written order (0 = units)."""
    return list(range(n)) if reversed_ else list(range(n - 1, -1, -1))


def digits(text: str, hints: bool) -> str:
    """Drop the hint symbols: with hints the text alternates hint, digit."""
    if hints:
        assert all(h in HINTS and h not in "0123456789" for h in text[0::2])
        text = text[1::2]
    assert text.isascii() and text.isdigit()
    return text


# -- which combinations exist ----------------------------------------------------------------------
@pytest.mark.parametrize("opts", ALL, ids=label)
def test_exactly_the_documented_combinations_are_rejected(opts):
    task = get("addition")
    if rejected(opts):
        with pytest.raises(BadInput):
            make(task, **opts)
    else:
        make(task, **opts)


def test_string_task_rules():
    copy, rev = get("copy"), get("reverse")
    with pytest.raises(BadInput, match="zero_pad"):
        make(copy, zero_pad=True, reverse_output=False)
    with pytest.raises(BadInput, match="reverse_output=false"):
        make(copy, position_ids="coupled", reverse_output=True)
    make(copy, position_ids="coupled", reverse_output=False)
    make(rev, position_ids="coupled", reverse_output=False)
    # `auto` resolved by the caller to abacus still may not carry index hints.
    with pytest.raises(BadInput):
        Format(FormatConfig(index_hints=True), get("addition"), position_ids="abacus")


@pytest.mark.parametrize("name", ["maze", "multiplication-steps"])
def test_tasks_written_in_reading_order_refuse_reversal(name):
    task = get(name)
    for opts in ({"reverse_output": True}, {"reverse_output": False, "reverse_operands": True}):
        with pytest.raises(BadInput, match="reverse_output=false"):
            make(task, **opts)
    ex = task.example(0, "train", 3)
    fmt = make(task, reverse_output=False)
    assert fmt.render(ex) == (ex.prompt, ex.answer)
    enc = fmt.encode(ex)
    assert fmt.tokenizer.decode(enc.prompt[1:]) == ex.prompt and enc.answer_text == ex.answer


def test_a_few_renderings_by_hand():
    ex = Example(fields=("37", "58"), ops=("+", "="), answer="95")
    assert make(get("addition")).render(ex) == ("37+58=", "59")
    assert make(get("addition"), reverse_operands=True, index_hints=True).render(ex) == ("a7b3+a8b5=", "a5b9")
    assert make(get("addition"), index_hints=True, reverse_output=False).render(ex) == ("b3a7+b5a8=", "b9a5")
    small = Example(fields=("7", "28"), ops=("+", "="), answer="35")
    assert make(get("addition"), zero_pad=True).render(small) == ("07+28=", "530")
    enc = make(get("addition"), position_ids="coupled").encode(ex)
    assert enc.prompt_pos == [3, 2, 1, 0, 2, 1, 0] and enc.answer_pos_base == 1


# -- (1) un-rendering gives back the canonical problem ---------------------------------------------
@pytest.mark.parametrize("opts", VALID, ids=label)
@pytest.mark.parametrize("name, op", [("addition", "+"), ("multiplication", "*")])
@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), index=st.integers(0, 10**6), max_len=st.integers(1, 8), with_rng=st.booleans())
def test_unrendered_text_gives_back_the_problem(name, op, opts, seed, index, max_len, with_rng):
    fmt = make(get(name, max_len=max_len), max_offset=4, **opts)
    ex = fmt.task.example(seed, "train", index)
    prompt, answer = fmt.render(ex, random.Random(seed) if with_rng else None)
    hints = opts["index_hints"]
    a, b = (digits(t, hints) for t in split_prompt(prompt, op))
    ans = digits(answer, hints)
    if opts["reverse_operands"]:
        a, b = a[::-1], b[::-1]
    if opts["reverse_output"]:
        ans = ans[::-1]
    la, lb = ex.meta["n_digits_a"], ex.meta["n_digits_b"]
    if opts["zero_pad"]:
        assert len(a) == len(b) == max(la, lb)
        assert len(ans) == (max(la, lb) + 1 if name == "addition" else la + lb)
        a, b, ans = (s.lstrip("0") or "0" for s in (a, b, ans))
    assert (a, b, ans) == (str(ex.meta["a"]), str(ex.meta["b"]), ex.meta["answer"])


# -- (2) the loss mask -----------------------------------------------------------------------------
@pytest.mark.parametrize("opts", VALID, ids=label)
def test_loss_mask_covers_exactly_the_answer_and_eos(opts):
    fmt = make(get("addition", max_len=5), max_offset=3, **opts)
    exs = fmt.task.examples(4, "train", 12)
    encs = [fmt.encode(ex, random.Random(i)) for i, ex in enumerate(exs)]
    batch = collate(encs)
    tokens, targets, pos_ids = batch.tokens.tolist(), batch.targets.tolist(), batch.pos_ids.tolist()
    for enc, ex, row_tok, row_tgt, row_pos in zip(encs, exs, tokens, targets, pos_ids):
        assert enc.prompt[0] == BOS and enc.answer[-1] == EOS
        assert enc.answer[:-1] == fmt.tokenizer.encode(enc.answer_text)
        seq = enc.prompt + enc.answer
        first = len(enc.prompt) - 1  # the input position that predicts the first answer token
        for k in range(len(row_tgt)):
            inside = first <= k < len(seq) - 1
            assert row_tgt[k] == (seq[k + 1] if inside else IGNORE)
            assert row_tok[k] == (seq[k] if k < len(seq) - 1 else PAD)
        assert [t for t in row_tgt if t != IGNORE] == fmt.tokenizer.encode(enc.answer_text) + [EOS]
        answer_pos = [enc.answer_pos_base + j for j in range(len(enc.answer))]
        assert row_pos[: len(seq) - 1] == (enc.prompt_pos + answer_pos)[:-1]


# -- (3) position ids ------------------------------------------------------------------------------
def operand_spans(text: str) -> list[tuple[int, str]]:
    """(start index, operand text) for the two operands of a prompt text."""
    a, b = split_prompt(text, "+")
    return [(0, a), (len(a) + 1, b)]


@pytest.mark.parametrize("opts", [o for o in VALID if o["position_ids"] != "standard"], ids=label)
def test_abacus_and_coupled_position_ids(opts):
    fmt = make(get("addition", max_len=7), **opts)
    for split, i in itertools.product(("train", "test"), range(30)):
        ex = fmt.task.example(5, split, i)
        text, answer = fmt.render(ex)
        enc = fmt.encode(ex)
        pos, base = enc.prompt_pos, enc.answer_pos_base
        assert enc.prompt[1:] == fmt.tokenizer.encode(text) and len(pos) == len(text) + 1
        assert base == 1 and pos[-1] == base - 1  # "=" just before the answer
        width = max(len(o) for _, o in operand_spans(text))
        # BOS: id 0 under abacus; under coupled the id one past the widest operand's top digit
        assert pos[0] == (base + width if opts["position_ids"] == "coupled" else 0)
        assert pos[1 + text.index("+")] == 0
        by_significance = {}
        for start, operand in operand_spans(text):
            for k, s in enumerate(significances(len(operand), opts["reverse_operands"])):
                got = pos[1 + start + k]
                if opts["position_ids"] == "abacus":
                    assert got == base + k  # 1-based index within the operand as written
                else:
                    assert got == base + s
                    by_significance.setdefault(s, set()).add(got)
        if opts["position_ids"] == "coupled":
            # Answer token j (id base + j) is written units first, so its significance is j.
            for j in range(len(answer)):
                by_significance.setdefault(j, set()).add(base + j)
            assert all(len(ids) == 1 for ids in by_significance.values())


@pytest.mark.parametrize("opts", [o for o in VALID if o["position_ids"] == "standard"], ids=label)
def test_standard_position_ids_count_tokens(opts):
    fmt = make(get("addition", max_len=7), max_offset=5, **opts)
    for i in range(20):
        enc = fmt.encode(fmt.task.example(5, "train", i), random.Random(i))
        assert enc.prompt_pos == list(range(len(enc.prompt))) and enc.answer_pos_base == len(enc.prompt)


# -- (4) random offsets ----------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [o for o in VALID if o["position_ids"] != "standard"], ids=label)
def test_random_offset_shifts_every_digit_id_alike(opts):
    max_offset = 5
    fmt = make(get("addition", max_len=6), max_offset=max_offset, **opts)
    seen = set()
    for i in range(120):
        ex = fmt.task.example(6, "train", i)
        text, _ = fmt.render(ex)
        plain, shifted = fmt.encode(ex), fmt.encode(ex, random.Random(i))
        assert fmt.encode(ex) == plain  # no rng, no offset
        offset = shifted.answer_pos_base - plain.answer_pos_base
        assert 0 <= offset <= max_offset
        seen.add(offset)
        for k, ch in enumerate(text):
            p, q = plain.prompt_pos[1 + k], shifted.prompt_pos[1 + k]
            assert q == (p if ch == "+" else p + offset)  # "=" moves with the answer it precedes
    assert seen == set(range(max_offset + 1))


# -- (5) index hints -------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [o for o in VALID if o["index_hints"]], ids=label)
@pytest.mark.parametrize("with_rng", [False, True])
def test_each_digit_is_preceded_by_the_hint_for_its_significance(opts, with_rng):
    max_offset = 4
    fmt = make(get("addition", max_len=8), max_offset=max_offset, **opts)
    seen = set()
    for i in range(80):
        ex = fmt.task.example(7, "train", i)
        prompt, answer = fmt.render(ex, random.Random(i) if with_rng else None)
        parts = [(t, opts["reverse_operands"]) for t in split_prompt(prompt, "+")] + [(answer, opts["reverse_output"])]
        # The offset is whatever hint the units digit of a got.
        a_text, a_reversed = parts[0]
        offset = HINTS.index(a_text[0] if a_reversed else a_text[-2])
        assert 0 <= offset <= (max_offset if with_rng else 0)
        seen.add(offset)
        for text, reversed_ in parts:
            assert len(text) % 2 == 0
            written = text[1::2]
            assert written.isdigit()
            sig = significances(len(written), reversed_)
            assert text[0::2] == "".join(HINTS[s + offset] for s in sig)
    assert seen == (set(range(max_offset + 1)) if with_rng else {0})


# -- the index-hint limit, checked from the config (issue #18) -----------------------------------------------
@pytest.mark.parametrize("name, params, max_offset, ok", [
    ("addition", dict(max_len=256, sampling="fixed"), 0, False),  # sums of 257 digits
    ("addition", dict(max_len=255, sampling="fixed"), 0, True),
    ("addition", dict(max_len=250), 6, False),  # 251 + 6 places with the largest training offset
    ("addition", dict(max_len=250), 5, True),
    ("multiplication", dict(max_len=128), 0, True),  # 256 digits
    ("multiplication", dict(max_len=129), 0, False),
    ("copy", dict(max_len=256, alphabet="01"), 0, True),
    ("copy", dict(max_len=257, alphabet="01"), 0, False),
])
def test_index_hints_beyond_their_places_are_refused_when_the_format_is_built(name, params, max_offset, ok):
    task = get(name, **params)
    config = FormatConfig(index_hints=True, max_offset=max_offset, reverse_output=task.numeric)
    if ok:
        fmt = Format(config, task)
        longest = task.at_length(task.config.max_len)
        for i in range(20):  # every example renders, with every offset training draws
            fmt.encode(longest.example(0, "train", i), random.Random(i))
        return
    with pytest.raises(BadInput, match=f"index hints name {len(HINTS)} places, and {name} at max_len=") as e:
        Format(config, task)
    assert "\n" not in str(e.value)


def test_sample_refuses_a_hint_limit_before_its_first_line():
    from seqlab.formats.samples import sample_examples

    records = sample_examples("addition", dict(max_len=256, sampling="fixed"), ["index_hints=true"], 5, 0, "train")
    with pytest.raises(BadInput, match="257 characters"):
        next(records)  # the first record, before any line is printed
