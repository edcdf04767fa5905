"""Addition: every example checked against Python ints and against a hand parse of the prompt
(the shared checks are in checks_arithmetic.py)."""

from tests.tasks.checks_arithmetic import arithmetic_task_tests


def expected_answer(a: int, b: int) -> str:
    return str(a + b)


(test_every_example_is_correct, test_pairs_visits_every_length_pair_equally_often,
 test_repeated_calls_agree) = arithmetic_task_tests("addition", "+", expected_answer)
