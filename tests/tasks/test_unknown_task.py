"""The unknown-task message names the tasks of every kind of run, grouped by kind (issue #18): a run or
`seqlab sample` picks its kind by the task's name, so a name no kind knows is answered for all of them."""

import pytest

from seqlab.core.errors import BadInput
from seqlab.runs import KINDS, kind_of_task
from seqlab.tasks import TASKS
from seqlab.tasks.function_classes import FUNCTIONS
from seqlab.tasks.token_base import TOKEN_TASKS


def test_an_unknown_task_lists_every_kinds_tasks_grouped_by_kind():
    with pytest.raises(BadInput) as e:
        kind_of_task("zzzz")
    message = str(e.value)
    assert message.startswith("unknown task 'zzzz' (known ") and "\n" not in message
    groups = {k.task_group: k.tasks for k in KINDS.values()}
    assert set(groups) == {"character tasks", "token tasks", "in-context function classes"}
    for group, registry in groups.items():
        assert f"{group}: {', '.join(sorted(registry))}" in message
    for name in [*TASKS, *TOKEN_TASKS, *FUNCTIONS]:
        assert name in message


@pytest.mark.parametrize("typo, meant", [("mqr", "mqar"), ("linear-regresion", "linear-regression"),
                                         ("additon", "addition"), ("icl-mapp", "icl-map")])
def test_an_unknown_task_suggests_the_nearest_of_any_kind(typo, meant):
    with pytest.raises(BadInput, match=f"unknown task '{typo}' \\(did you mean '{meant}'\\?\\)"):
        kind_of_task(typo)


def test_known_and_renamed_tasks_still_pick_their_kind():
    assert kind_of_task("mqar").name == "token" and kind_of_task("sparse-parity").name == "icl"
    assert kind_of_task("multiplication_steps").name == kind_of_task(None).name == "text"
