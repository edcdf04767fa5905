"""`seqlab eval --lengths`: bounded up front (issue #18), so an evaluation never runs for hours without a line."""

from __future__ import annotations

import time

import pytest

from seqlab.core.errors import BadInput
from seqlab.runs import parse_lengths
from seqlab.runs.directory import MAX_EVAL_LENGTH
from tests.conftest import TINY


def test_ordinary_lengths():
    assert parse_lengths("1-5") == [1, 2, 3, 4, 5]
    assert parse_lengths("5,10,20") == [5, 10, 20]
    assert parse_lengths(" 12 ") == [12]
    assert parse_lengths("1-3,7") == [1, 2, 3, 7]
    assert parse_lengths(f"1-{MAX_EVAL_LENGTH}") == list(range(1, MAX_EVAL_LENGTH + 1))


@pytest.mark.parametrize("text, needle", [
    ("1-100000", f"goes beyond {MAX_EVAL_LENGTH}"),
    ("2147483648", f"goes beyond {MAX_EVAL_LENGTH}"),
    ("5000", f"goes beyond {MAX_EVAL_LENGTH}"),
    ("9" * 5000, f"goes beyond {MAX_EVAL_LENGTH}"),
    ("1-" + "9" * 5000, f"goes beyond {MAX_EVAL_LENGTH}"),
    (",".join(["1-1000"] * 3), f"names more than {MAX_EVAL_LENGTH} lengths"),
    (",".join(["7"] * 100000), f"names more than {MAX_EVAL_LENGTH} lengths"),
    ("0", "positive lengths"),
    ("5-3", "names no length"),
    ("-5", "expects A-B or a list"),
    ("1-2-3", "expects A-B or a list"),
    ("abc", "expects A-B or a list"),
    ("\u0663", "expects A-B or a list"),  # a digit, but not one int() should be handed
])
def test_lengths_beyond_the_bound_are_refused_at_once_in_one_line(text, needle):
    t0 = time.perf_counter()
    with pytest.raises(BadInput) as e:
        parse_lengths(text)
    assert time.perf_counter() - t0 < 1
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and len(msg) < 250, msg


def test_a_caller_may_bound_by_its_own_run():
    assert parse_lengths("1-8", most=8, why="model.max_points=8") == list(range(1, 9))
    with pytest.raises(BadInput, match=r"at most 8 \(model\.max_points=8\)"):
        parse_lengths("9", most=8, why="model.max_points=8")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from seqlab.runs import make_config, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(out, make_config({}, [*TINY, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2"]), quiet=True)
    return out


@pytest.mark.parametrize("lengths", ["1-100000", "2147483648", "5000", "9" * 5000])
def test_seqlab_eval_refuses_them_in_one_line_with_exit_2(cli, tiny_run, lengths):
    t0 = time.perf_counter()
    code, out, err = cli("eval", tiny_run, "--lengths", lengths, "--n", "2")
    assert time.perf_counter() - t0 < 30
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --lengths") and "Traceback" not in err, err
