"""A check shared by every task family's tests."""

from seqlab.tasks import get


def assert_repeated_calls_agree(name: str) -> None:
    """The same examples from one task object twice, and from a fresh one: example(seed, split, i) is pure."""
    task = get(name, min_len=3, max_len=12)
    keys = [(9, split, i) for split in ("train", "test") for i in range(100)]
    first = [task.example(*k) for k in keys]
    assert [task.example(*k) for k in keys] == first
    assert [get(name, min_len=3, max_len=12).example(*k) for k in keys] == first
