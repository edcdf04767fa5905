"""The token-task registry: every registered token task keeps the contract at its default config, and a
name that is not registered is BadInput naming the nearest one or listing them all."""

import pytest

from seqlab.core.errors import BadInput
from seqlab.tasks.token_base import TOKEN_TASKS, TokenConfig, TokenTask, get_token_task
from tests.tasks.checks_tokens import check_contract, check_purity


@pytest.mark.parametrize("name", TOKEN_TASKS.names())
def test_every_registered_token_task_keeps_the_contract(name):
    task = get_token_task(name)
    assert isinstance(task, TokenTask) and type(task) is TOKEN_TASKS[name] and task.name == name
    assert isinstance(task.config, TokenConfig)
    assert task.describe() and "\n" not in task.describe()
    for split in ("train", "test"):
        check_contract(task, task.example(0, split, 0))
    check_purity(name, {})


def test_an_unknown_token_task_names_the_nearest_or_lists_them_all():
    with pytest.raises(BadInput, match=r"^unknown token task 'mqr' \(did you mean 'mqar'\?\)$"):
        get_token_task("mqr")
    with pytest.raises(BadInput) as e:
        get_token_task("zzz")
    assert str(e.value) == f"unknown token task 'zzz' (known: {', '.join(sorted(TOKEN_TASKS))})"
