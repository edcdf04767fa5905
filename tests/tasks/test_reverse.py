"""Reverse: every example checked against an independent computation from the input read back
from the prompt (the shared checks are in checks_strings.py)."""

from tests.tasks.checks_strings import string_task_tests


def expected_answer(s: str) -> str:
    return "".join(s[k] for k in range(len(s) - 1, -1, -1))


(test_every_example_is_answered_correctly, test_pairs_visits_every_length_equally_often,
 test_repeated_calls_agree) = string_task_tests("reverse", expected_answer)
