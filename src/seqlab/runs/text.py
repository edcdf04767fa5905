"""Text runs: a character task (addition, copy, maze, ...) rendered by a format into token ids, a decoder or
encoder reading them, scored by exact match of the decoded answer, by length.

config.json names no kind: text runs were the first kind, and their directories say so by its absence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from seqlab.core.errors import BadInput
from seqlab.core.io import write_json
from seqlab.data.text import TrainStream, test_examples
from seqlab.eval.decode import exact_match
from seqlab.eval.plots import accuracy_by_length
from seqlab.formats.format import Format, parse_prompt
from seqlab.formats.samples import sample_examples
from seqlab.formats.tokenizer import BOS, EOS, PAD
from seqlab.models import TABLE_POSITIONS
from seqlab.models import build as build_model
from seqlab.runs.directory import check_writable, parse_lengths
from seqlab.runs.kind import KINDS, EvalRequest, Parts, RunKind
from seqlab.runs.loaded import Prompt
from seqlab.tasks import TASKS, Example
from seqlab.train import RunConfig


# -- building the pieces ---------------------------------------------------------------------
def build_parts(config: RunConfig):
    """(task, format, model) for a config, with every cross-check done before training starts."""
    task = config.make_task()
    fmt = Format(config.format, task, config.format_position_ids)
    model = build_model(config.model, fmt.tokenizer.vocab_size)
    check_positions_fit(config, fmt, [task.config.max_len])
    return task, fmt, model


def check_positions_fit(config: RunConfig, fmt: Format, lengths: list[int]) -> None:
    """Position tables are finite: the longest example must fit in model.max_positions; so are index hints."""
    task = config.make_task()
    for n in lengths:
        fmt.check_hints(task.at_length(n))
    if config.model.position not in TABLE_POSITIONS:
        return
    for n in lengths:
        ex = task.at_length(n).example(0, "test", 0)
        top = fmt.max_position(ex)
        if top >= config.model.max_positions:
            raise BadInput(
                f"length {n} needs position ids up to {top}, beyond model.max_positions={config.model.max_positions}"
            )


def make_evaluator(config: RunConfig, task, fmt, device):
    """Exact match on a fixed set of test examples, for periodic evaluation during training.

    By default the set holds equally many problems at every length of the training range (all
    operands of that length), so early stopping waits for the short and the long problems alike;
    `train.eval_length` evaluates at one length instead.
    """
    t = config.train
    lengths = [t.eval_length] if t.eval_length else list(range(task.config.min_len, task.config.max_len + 1))
    per_length = max(1, t.eval_n // len(lengths))
    pairs = [p for L in lengths for p in test_examples(task.at_length(L), fmt, t.seed, per_length)]

    def evaluate(model):
        return exact_match(model, pairs, fmt, task.slice_key, device=device)

    return evaluate


def longest_sequence(task, fmt: Format) -> int:
    """Tokens in a training example at the task's longest length (prompt, answer and end token)."""
    enc = fmt.encode(task.at_length(task.config.max_len).example(0, "test", 0))
    return len(enc.prompt) + len(enc.answer)


# -- evaluation by length ----------------------------------------------------------------------
def evaluate_by_length(run, lengths: list[int], n: int, seed: int | None = None, label: str = "by_length",
                       device: str | None = None, plot: bool = True) -> dict[str, Any]:
    """Exact match on n test problems at each length of a text run (a run directory or a loaded run);
    writes eval/<label>.json and, with `plot`, plots/accuracy_by_length.png."""
    from seqlab.runs import load

    run = run if not isinstance(run, (str, Path)) else load(run, device)
    run_dir, config, task, fmt, model = run.run_dir, run.config, run.task, run.format, run.model
    check_positions_fit(config, fmt, lengths)
    check_writable(run_dir)
    seed = config.train.seed if seed is None else seed
    per_length: dict[int, dict[str, Any]] = {}
    for L in lengths:
        r = exact_match(model, test_examples(task.at_length(L), fmt, seed, n), fmt, task.slice_key, device=run.device)
        per_length[L] = {"exact_match": r["exact_match"], "n": r["n"]}
    train_range = (task.config.min_len, task.config.max_len)
    result = {"run_dir": str(run_dir), "task": task.name, "slice_key": task.slice_key, "n": n, "seed": seed,
              "train_range": list(train_range), "step": run.step,
              "exact_match_by_length": {str(k): v["exact_match"] for k, v in per_length.items()}}
    write_json(Path(run_dir) / "eval" / f"{label}.json", result)
    if plot:
        accuracy_by_length({config.model.position: {k: v["exact_match"] for k, v in per_length.items()}},
                           Path(run_dir) / "plots" / "accuracy_by_length.png", train_range,
                           title=f"{task.name}: exact match by length")
    return result


# -- the kind ------------------------------------------------------------------------------------
class TextKind(RunKind):
    name = "text"
    title = "text-task"
    config_cls = RunConfig
    tasks = TASKS
    task_label = "sequence"
    main_metric = "exact_match"
    task_group = "character tasks"
    writes_kind = False

    def check(self, config: RunConfig) -> None:
        task = config.make_task()
        check_positions_fit(config, Format(config.format, task, config.format_position_ids), [task.config.max_len])

    def build(self, config: RunConfig, device) -> Parts:
        task, fmt, model = build_parts(config)
        stream = TrainStream(task, fmt, config.train.seed, config.train.batch_size)
        return Parts(task, model, stream, make_evaluator(config, task, fmt, device), format=fmt,
                     sequence_length=longest_sequence(task, fmt))

    def eval_line(self, final: dict[str, Any]) -> str:
        return f"exact match {final['exact_match']:.4f} on {final['n']} test problems"

    def load_parts(self, config: RunConfig):
        task, fmt, model = build_parts(config)
        return task, fmt, model

    def evaluate(self, run, request: EvalRequest) -> dict[str, Any]:
        if request.lengths:
            lengths = parse_lengths(request.lengths)
        else:
            trained = run.task.config
            lengths = list(range(trained.min_len, trained.max_len + 1))
        return evaluate_by_length(run, lengths, request.n, request.seed)

    def eval_tables(self, result: dict[str, Any], request: EvalRequest) -> list:
        from rich.table import Table

        table = Table(title=f"{result['task']}: exact match by length (n={request.n})")
        table.add_column("length", justify="right")
        table.add_column("exact match", justify="right")
        lo, hi = result["train_range"]
        for k, v in result["exact_match_by_length"].items():
            table.add_row(k + (" *" if lo <= int(k) <= hi else ""), f"{v:.3f}")
        return [table, "[dim]* inside the training range[/dim]"]

    def vocabulary(self, run) -> dict[str, Any]:
        return {"source": f"seqlab CharTokenizer of task {run.task.name} in the run's format: one id per character, "
                          "prompts start with <bos>, answers end with <eos>",
                "tokens": list(run.tokenizer.itos), "pad_id": PAD, "bos_id": BOS, "eos_id": EOS,
                "special": {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD},
                "max_length": run.config.model.max_positions}

    # -- a loaded run's text -------------------------------------------------------------------
    def encode_prompt(self, run, prompt) -> Prompt:
        ex = prompt if isinstance(prompt, Example) else parse_prompt(run.task, str(prompt))
        enc = run.format.encode(ex)
        return Prompt(enc.prompt, enc.prompt_pos, enc.answer_pos_base)

    def decode_output(self, run, ids: list[int]) -> str:
        return run.tokenizer.decode(ids)

    def encode_continuation(self, run, continuation, end: bool) -> list[int]:
        return run.tokenizer.encode(str(continuation)) + ([EOS] if end else [])

    def end_token(self, run) -> int:
        return EOS

    # -- tasks ---------------------------------------------------------------------------------
    def sample(self, task: str, params: dict[str, Any], format_overrides: list[str], n: int, seed: int,
               split: str) -> Iterator[dict[str, Any]]:
        return sample_examples(task, params, format_overrides, n, seed, split)

    def sample_line(self, record: dict[str, Any]) -> str:
        return f"{record['prompt']}[bold green]{record['target']}[/bold green]  [dim]{record['meta']}[/dim]"

    def task_listing(self, name: str) -> dict[str, Any]:
        cls = self.tasks[name]
        return {"name": name, "kind": self.task_label, "description": cls().describe(), "slice_key": cls.slice_key,
                "config": sorted(cls.Config.model_fields)}


TEXT = KINDS.register(TextKind(), name="text")
