"""The contract of a kind of run: what differs between a character task through a format ("text"), a task in
token ids ("token") and an in-context function class ("icl"). The lifecycle (lifecycle.py) is written once
against it; each kind is one module holding only what differs, registered in KINDS.

A kind says which tasks it trains (its task registry), how its config reads, which parts a run is built
from, how a trained run is evaluated and shown, and how its examples are sampled. Adding a kind is one
module that subclasses RunKind, registers an instance, and is imported in runs/__init__.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from seqlab.core.configs import Config
from seqlab.core.errors import BadInput
from seqlab.core.registry import Registry


@dataclass
class Parts:
    """What one run trains: built from its config, in the order the seed makes them."""

    task: Any  # the task, token task or function class
    model: Any
    stream: Any  # training batches (seqlab.data)
    evaluate: Callable[[Any], dict[str, Any]]  # model -> the periodic evaluation's metrics
    objective: Callable | None = None  # the training loss, where it is not the model's own
    format: Any = None  # a text run's Format (tokenizer included); None for the other kinds
    sequence_length: int | None = None  # the longest sequence a training batch holds (for state_size)


@dataclass
class EvalRequest:
    """What `seqlab eval` asks of a trained run, as given on the command line."""

    lengths: str | None = None  # a text run's lengths, an in-context run's k (A-B or a list)
    n: int = 200
    seed: int | None = None
    baselines: str = "least-squares"  # in-context runs: classical solvers scored beside the model


class RunKind:
    """One kind of run. Subclasses set the class attributes and implement the methods that raise."""

    name: ClassVar[str]  # config.json's "kind" (text runs, the first kind, write none)
    title: ClassVar[str]  # how messages name such a run: "text-task", "token-task", "in-context learning"
    config_cls: ClassVar[type[Config]]
    tasks: ClassVar[Registry]  # the tasks this kind trains; a task name picks its kind
    task_label: ClassVar[str]  # `seqlab tasks --json`'s "kind" of such a task
    main_metric: ClassVar[str]  # what a summary reads first (metrics.jsonl's eval_<metric>)
    writes_kind: ClassVar[bool] = True  # whether config.json names the kind
    task_noun: ClassVar[str] = ""  # what `seqlab sample` calls such a task when it refuses a text format
    task_group: ClassVar[str] = "tasks"  # how the unknown-task message heads this kind's tasks
    reads_tokens: ClassVar[bool] = True  # whether the model reads token ids (generate, score, export)

    # -- configs -----------------------------------------------------------------------------
    def resolve(self, data: dict[str, Any]):
        """The typed config of a mapping of sections (BadInput naming the first problem)."""
        from seqlab.core.configs import parse_config

        return parse_config(self.config_cls, data)

    def check(self, config) -> None:
        """Cross-checks that need the task built (position tables long enough); nothing is written."""

    # -- training ----------------------------------------------------------------------------
    def build(self, config, device) -> Parts:
        raise NotImplementedError

    def eval_line(self, final: dict[str, Any]) -> str:
        """The final evaluation as `seqlab train` prints it after "step N, "."""
        raise NotImplementedError

    # -- trained runs ------------------------------------------------------------------------
    def load_parts(self, config) -> tuple[Any, Any, Any]:
        """(task, format or None, model) of a config, the model untrained."""
        raise NotImplementedError

    def evaluate(self, run, request: EvalRequest) -> dict[str, Any]:
        """`seqlab eval` on a loaded run: the result (also written under eval/)."""
        raise NotImplementedError

    def eval_tables(self, result: dict[str, Any], request: EvalRequest) -> list:
        """What `seqlab eval` prints of a result: rich renderables."""
        raise NotImplementedError

    def vocabulary(self, run) -> dict[str, Any] | None:
        """What the model's token ids mean (for export), or None where it reads no tokens."""
        return None

    # -- a loaded run's inputs and outputs (runs/loaded.py) ------------------------------------
    def encode_prompt(self, run, prompt):
        """A prompt as the model reads it (runs.loaded.Prompt)."""
        raise BadInput(f"{self.title} runs read vectors, not prompts of text or token ids: use run.predict(xs, ys)")

    def decode_output(self, run, ids: list[int]):
        raise BadInput(f"{self.title} runs write no tokens")

    def encode_continuation(self, run, continuation, end: bool) -> list[int]:
        raise BadInput(f"{self.title} runs score no continuations: use run.predict(xs, ys)")

    def end_token(self, run) -> int:
        """The token that ends what the model writes (-1: none, generation writes max_new_tokens)."""
        return -1

    def predict(self, run, xs, ys, loops=None):
        raise BadInput(f"predict() is for runs that read vectors; {self.title} runs take prompts: use run.generate")

    # -- tasks -------------------------------------------------------------------------------
    def make_task(self, name: str, params: dict[str, Any]):
        """The task `name` with its knobs (BadInput naming the nearest task or key)."""
        raise NotImplementedError

    def sample(self, task: str, params: dict[str, Any], format_overrides: list[str], n: int, seed: int,
               split: str) -> Iterator[dict[str, Any]]:
        """`seqlab sample`'s records: {"task", "prompt", "target", "meta"}; by default those of a task that
        writes its own prompts, which no text format applies to."""
        if format_overrides:
            raise BadInput(f"{task} is {self.task_noun} and has no text format")
        gen = self.make_task(task, params)
        return (gen.sample_record(seed, split, i) for i in range(n))

    def sample_line(self, record: dict[str, Any]) -> str:
        """One sampled record as `seqlab sample` prints it without --json (rich markup)."""
        return f"{record['prompt']}  [bold green]{record['target']}[/bold green]"

    def task_listing(self, name: str) -> dict[str, Any]:
        """`seqlab tasks --json`'s record of one task of this kind."""
        cls = self.tasks[name]
        return {"name": name, "kind": self.task_label, "description": cls().describe(),
                "config": sorted(cls.Config.model_fields)}

    def task_tag(self, name: str) -> str:
        """The dim note after a task's description in `seqlab tasks`."""
        return f"({', '.join(sorted(self.tasks[name].Config.model_fields))})"


KINDS: Registry[RunKind] = Registry("kind of run", sort_known=False)
DEFAULT_KIND = "text"  # a task in no kind's registry, and a config.json without "kind"


def get_kind(name: str) -> RunKind:
    return KINDS.get(name)


def kind_of_task(name: str | None) -> RunKind:
    """The kind that trains the task `name`; the default kind for None (or a name that is not text, which its
    registry then refuses). A name no kind has is BadInput naming the nearest task of any kind, or listing
    every kind's tasks."""
    for k in KINDS.values():
        if name in k.tasks:
            return k
    renamed = [k for k in KINDS.values() if k.tasks.renamed(name or "") is not None]
    if renamed:
        return renamed[0]
    if isinstance(name, str):
        raise BadInput(unknown_task(name))
    return KINDS.get(DEFAULT_KIND)


def unknown_task(name: str) -> str:
    """"unknown task 'NAME' (did you mean 'X'?)", the nearest among every kind's tasks; else every kind's
    tasks, grouped by kind."""
    from seqlab.core.registry import nearest

    near = nearest(name, [t for k in KINDS.values() for t in k.tasks])
    if near is not None:
        return f"unknown task '{name}' (did you mean '{near}'?)"
    groups = "; ".join(f"{k.task_group}: {', '.join(sorted(k.tasks))}" for k in KINDS.values() if len(k.tasks))
    return f"unknown task '{name}' (known {groups})"


def kind_of_config(data: dict[str, Any]) -> RunKind:
    """The kind of run a config (a mapping of sections) describes: its "kind" where it names one (as a run's
    config.json does), else its task's."""
    if data.get("kind") in KINDS:
        return KINDS.get(data["kind"])
    task = data.get("task")
    return kind_of_task(task if isinstance(task, str) else task.get("name") if isinstance(task, dict) else None)


def stored_kind(run_dir: Path) -> RunKind | None:
    """The kind a run directory's config.json declares (none: the default kind); None where there is no
    readable config.json."""
    from seqlab.core.io import read_json

    try:
        data = read_json(Path(run_dir) / "config.json")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("kind", DEFAULT_KIND)
    if name not in KINDS:
        raise BadInput(f"{run_dir} holds a run of an unknown kind '{name}' (known: {', '.join(KINDS)})")
    return KINDS.get(name)
