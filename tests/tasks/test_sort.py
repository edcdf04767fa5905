"""Sort: every example checked against an independent computation from the input read back
from the prompt (the shared checks are in checks_strings.py)."""

from collections import Counter

from tests.tasks.checks_strings import string_task_tests


def expected_answer(s: str) -> str:
    """A counting sort: count each character, then emit them smallest code point first."""
    counts = Counter(s)
    out = []
    while counts:
        ch = min(counts, key=ord)
        out.append(ch * counts.pop(ch))
    answer = "".join(out)
    assert all(ord(x) <= ord(y) for x, y in zip(answer, answer[1:])) and Counter(answer) == Counter(s)
    return answer


(test_every_example_is_answered_correctly, test_pairs_visits_every_length_equally_often,
 test_repeated_calls_agree) = string_task_tests("sort", expected_answer)
