"""Token runs: a task that writes token ids itself (MQAR, Triplet-Counting, key-value retrieval, in-context
maps, or a mixture of them), a backbone of any mixers reading them, scored at the task's chosen positions:
accuracy over the scored positions and exact match over whole sequences, instead of a decoded answer string
(for a mixture, also per component).

config.json holds `"kind": "token"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, task_params, task_section
from seqlab.core.errors import BadInput
from seqlab.core.io import write_json
from seqlab.core.targets import IGNORE
from seqlab.data.tokens import TokenStream
from seqlab.eval.token_scoring import score_tokens
from seqlab.models import ModelConfig, build, check_arch
from seqlab.models.decoder import TABLE_POSITIONS
from seqlab.runs.kind import KINDS, EvalRequest, Parts, RunKind
from seqlab.runs.loaded import Prompt
from seqlab.tasks.token_base import TOKEN_TASKS, TokenTask, get_token_task
from seqlab.tasks.token_mixture import TokenMixture
from seqlab.train import TrainConfig
from seqlab.train.tvp import TVPConfig, TVPObjective


class TokenRunConfig(Config):
    kind: Literal["token"] = "token"
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "mqar"}, validate_default=True)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tvp: TVPConfig | None = None  # the task vector prompting loss (Yang et al. 2025), for in-context mapping tasks

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> dict[str, Any]:
        return task_section(v, get_token_task, "a token task")

    @model_validator(mode="after")
    def _check(self):
        check_arch(self.model.arch)
        L = self.make_task().max_length
        if self.model.position in TABLE_POSITIONS and L > self.model.max_positions:
            raise ValueError(f"sequences of {L} tokens need model.max_positions >= {L}")
        if self.tvp is not None:
            if self.task["name"] != "icl-map":
                raise ValueError(f"tvp needs the in-context mapping task (task.name=icl-map), not {self.task['name']}")
            if self.tvp.layer >= self.model.n_layers:
                raise ValueError(f"tvp.layer {self.tvp.layer} is past the model's last block ({self.model.n_layers - 1})")
            if self.model.arch != "decoder":
                raise ValueError("tvp trains a decoder (model.arch=decoder)")
        return self

    def make_task(self) -> TokenTask:
        return get_token_task(self.task["name"], **task_params(self.task))


def make_token_evaluator(config: TokenRunConfig, task: TokenTask):
    tokens, targets = task.batch(config.train.seed, "test", 0, config.train.eval_n)

    def evaluate(model):
        r = score_tokens(model, tokens, targets)
        return {"accuracy": r["accuracy"], "exact_match": r["exact_match"], "n": r["n"]}

    return evaluate


def evaluate_tokens(run, n: int, seed: int | None = None, task_overrides: dict[str, Any] | None = None,
                    device: str | None = None) -> dict[str, Any]:
    """Accuracy of a trained token run (a run directory or a loaded run) on n test examples, optionally of a
    changed task (more key-value pairs, a longer sequence) to test generalisation; also written to
    eval/accuracy.json."""
    from seqlab.runs import load

    run = run if not isinstance(run, (str, Path)) else load(run, device)
    config, task, model = run.config, run.task, run.model
    if task_overrides:
        task = get_token_task(config.task["name"], **{**task_params(config.task), **task_overrides})
    if task.vocab_size > model.vocab_size:
        raise BadInput(f"the task now needs {task.vocab_size} token ids; the model reads {model.vocab_size}")
    seed = config.train.seed if seed is None else seed
    tokens, targets = task.batch(seed, "test", 0, n)
    scores = score_tokens(model, tokens, targets, keep_right=True)
    right = scores.pop("right")
    result = {"task": config.task["name"], "task_config": task.config.to_json(), "seed": seed, **scores}
    if isinstance(task, TokenMixture):
        result["by_component"] = score_by_component(task, task.component_indices(seed, "test", 0, n), right, targets)
    write_json(Path(run.run_dir) / "eval" / "accuracy.json", result)
    return result


def score_by_component(task: TokenMixture, rows: np.ndarray, right: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """A mixture's test scores split by the component of each sequence (`rows`: its index), keyed by label."""
    scored = targets != IGNORE
    out = {}
    for k, label in enumerate(task.labels):
        mine = rows == k
        n_scored = int(scored[mine].sum())
        whole = np.all(right[mine] | ~scored[mine], axis=1)
        out[label] = {"accuracy": float(right[mine].sum() / max(n_scored, 1)),
                      "exact_match": float(whole.mean()) if len(whole) else 0.0, "n": int(mine.sum()), "n_scored": n_scored}
    return out


class TokenKind(RunKind):
    name = "token"
    title = "token-task"
    config_cls = TokenRunConfig
    tasks = TOKEN_TASKS
    task_label = "token"
    main_metric = "accuracy"
    task_group = "token tasks"
    task_noun = "a token task: it writes token ids itself"

    def build(self, config: TokenRunConfig, device) -> Parts:
        task = config.make_task()
        model = build(config.model, task.vocab_size)
        stream = TokenStream(task, config.train.seed, config.train.batch_size)
        objective = None
        if config.tvp is not None:
            objective = TVPObjective(model, config.tvp, task.arrow, task.comma, task.pad_id)
        return Parts(task, model, stream, make_token_evaluator(config, task), objective=objective,
                     sequence_length=task.max_length)

    def eval_line(self, final: dict[str, Any]) -> str:
        return f"accuracy {final['accuracy']:.4f} at the scored positions of {final['n']} test sequences"

    def load_parts(self, config: TokenRunConfig):
        task = config.make_task()
        return task, None, build(config.model, task.vocab_size)

    def evaluate(self, run, request: EvalRequest) -> dict[str, Any]:
        if request.lengths:
            raise BadInput("--lengths applies to text tasks and in-context runs; a token-task run is scored as a whole")
        return evaluate_tokens(run, request.n, request.seed)

    def eval_tables(self, result: dict[str, Any], request: EvalRequest) -> list:
        lines = [f"{result['task']}: accuracy {result['accuracy']:.4f} over {result['n_scored']} scored positions, "
                 f"exact match {result['exact_match']:.4f} over {result['n']} test sequences (eval/accuracy.json)"]
        for label, part in result.get("by_component", {}).items():
            lines.append(f"  {label}: accuracy {part['accuracy']:.4f}, exact match {part['exact_match']:.4f} "
                         f"over {part['n']} sequences")
        return lines

    def vocabulary(self, run) -> dict[str, Any]:
        task, model = run.task, run.model
        return {"source": f"token task {run.config.task['name']}: ids are the task's own symbols (seqlab sample shows them)",
                "tokens": [task.token_name(i) for i in range(model.vocab_size)], "pad_id": task.pad_id,
                "special": {"pad_token_id": task.pad_id},
                "max_length": max(run.config.model.max_positions, task.max_length)}

    # -- a loaded run's token ids ----------------------------------------------------------------
    def encode_prompt(self, run, prompt) -> Prompt:
        ids = [int(t) for t in prompt]
        if not ids or min(ids) < 0 or max(ids) >= run.model.vocab_size:
            raise BadInput(f"a token run's prompt is a non-empty list of token ids in [0, {run.model.vocab_size})")
        return Prompt(ids, list(range(len(ids))), len(ids))

    def decode_output(self, run, ids: list[int]) -> list[int]:
        return ids

    def encode_continuation(self, run, continuation, end: bool) -> list[int]:
        return self.encode_prompt(run, continuation).ids

    def end_token(self, run) -> int:
        return -1  # token tasks have no end token: generation writes max_new_tokens ids

    # -- tasks ---------------------------------------------------------------------------------
    def make_task(self, name: str, params: dict[str, Any]) -> TokenTask:
        return get_token_task(name, **params)

    def task_tag(self, name: str) -> str:
        return f"token task {super().task_tag(name)}"


TOKEN = KINDS.register(TokenKind(), name="token")
