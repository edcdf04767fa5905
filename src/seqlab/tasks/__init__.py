"""Procedurally generated tasks (no torch). `get("addition", max_len=10).example(seed, "train", i)`."""

from seqlab.tasks.base import Example, Task, TaskConfig
from seqlab.tasks.registry import TASKS, get, names, register, task_class
from seqlab.tasks import arithmetic, maze, strings  # noqa: F401  (registers the tasks)
from seqlab.tasks import function_classes, function_nonlinear  # noqa: F401  (registers the function classes)
from seqlab.tasks import count3, hmm, icl_maps, kv_retrieval, mqar  # noqa: F401  (registers the token tasks)
from seqlab.tasks import token_mixture  # noqa: F401  (registers the mixture of token tasks, after its components)

__all__ = ["Example", "Task", "TaskConfig", "TASKS", "get", "names", "register", "task_class"]
