"""Copy: every example checked against an independent computation from the input read back
from the prompt (the shared checks are in checks_strings.py)."""

from tests.tasks.checks_strings import string_task_tests


def expected_answer(s: str) -> str:
    return "".join(ch for ch in s)


(test_every_example_is_answered_correctly, test_pairs_visits_every_length_equally_often,
 test_repeated_calls_agree) = string_task_tests("copy", expected_answer)


def test_sampling_is_linear_in_the_length():
    # Decoding a problem number of n base-26 digits took n divisions of an n-digit number: 100k characters in
    # 5 s, 300k in 35 s. Four times the length now takes about four times as long (it took over 12 times).
    import time

    from seqlab.tasks import get

    def best(n: int) -> float:
        task = get("copy", max_len=n, sampling="fixed")
        times = []
        for r in range(5):
            t0 = time.perf_counter()
            for i in range(5 * r, 5 * r + 5):
                assert len(task.example(0, "train", i).answer) == n
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best(10_000) < 8 * best(2_500)


def test_max_len_beyond_the_limit_is_refused_with_the_reason():
    import pytest

    from seqlab.core.errors import BadInput
    from seqlab.tasks import get
    from seqlab.tasks.strings import MAX_STRING_LEN

    assert get("copy", max_len=MAX_STRING_LEN).config.max_len == MAX_STRING_LEN
    for name in ("copy", "reverse", "sort"):
        with pytest.raises(BadInput, match=f"max_len={MAX_STRING_LEN + 1} is above the limit of {MAX_STRING_LEN} "
                                           "characters: a prompt and its answer take 2 \\* max_len \\+ 3 tokens"):
            get(name, max_len=MAX_STRING_LEN + 1)
    with pytest.raises(BadInput, match="above the limit"):  # evaluation at a longer length too
        get("copy", max_len=10).at_length(MAX_STRING_LEN + 1)
