"""Runs on token tasks (MQAR, Triplet-Counting, key-value retrieval): a backbone of any mixers reads
token ids and is scored at the task's chosen positions.

The run directory has DESIGN.md's layout; `config.json` holds `"kind": "token"` so `seqlab eval` and
`seqlab report` score it by accuracy over the scored positions (and exact match over whole sequences)
instead of decoding an answer string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, apply_overrides, parse_config, task_params, task_section
from seqlab.data.text import Stream
from seqlab.core.errors import BadInput
from seqlab.core.io import write_json
from seqlab.models import ModelConfig, build, check_arch
from seqlab.models.decoder import TABLE_POSITIONS
from seqlab.runs.text import check_writable, is_run_dir, load_newest_weights, prepare_run, read_config_as, run_kind, write_run_config
from seqlab.tasks.token_base import TokenTask, get_token_task
from seqlab.train import TrainConfig, Trainer, pick_device
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


def resolve_token_config(base: dict[str, Any] | None = None, overrides: list[str] = ()) -> TokenRunConfig:
    return parse_config(TokenRunConfig, apply_overrides(base or {}, list(overrides)))


def is_token_run(run_dir: Path) -> bool:
    return run_kind(run_dir) == "token"


def read_token_config(run_dir: Path) -> TokenRunConfig:
    return read_config_as(run_dir, TokenRunConfig)


# -- data ---------------------------------------------------------------------------------------
@dataclass
class TokenBatch:
    tokens: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, L), -100 where nothing is scored

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.tokens.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))

    def model_args(self) -> tuple:
        return (self.tokens, self.targets)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_scored(self) -> int:
        """The positions the model's mean loss is over (multi-process training weighs ranks by it)."""
        return int((self.targets != -100).sum())


class TokenStream(Stream):
    """Training batch `step` holds train examples step * B .. step * B + B - 1."""

    def __init__(self, task: TokenTask, seed: int, batch_size: int):
        self.task, self.seed, self.batch_size = task, seed, batch_size

    def batch(self, step: int) -> TokenBatch:
        tokens, targets = self.task.batch(self.seed, "train", step * self.batch_size, self.batch_size)
        return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(targets))


# -- scoring ------------------------------------------------------------------------------------
@torch.no_grad()
def score_tokens(model, tokens: np.ndarray, targets: np.ndarray, batch: int = 256, keep_right: bool = False) -> dict[str, Any]:
    """Greedy predictions at every scored position: the share right ("accuracy", Zoology's MQAR
    metric), the share of sequences with every scored position right ("exact_match"), and per
    position of the sequence, the share right ("by_position", for placement studies). With
    `keep_right`, also "right": the (N, L) bool array of which scored positions were right, for
    scoring parts of an answer separately."""
    model.eval()
    dev = next(model.parameters()).device
    right = np.zeros(targets.shape, dtype=bool)
    for s in range(0, len(tokens), batch):
        t = torch.from_numpy(tokens[s:s + batch]).to(dev)
        y = torch.from_numpy(targets[s:s + batch]).to(dev)
        logits, wanted = model.scored_logits(t, y)
        keep = (y != -100).cpu().numpy()
        block = np.zeros(keep.shape, dtype=bool)
        block[keep] = (logits.argmax(-1) == wanted).cpu().numpy()  # both in row-major order of `keep`
        right[s:s + batch] = block
    scored = targets != -100
    n_scored = int(scored.sum())
    per_seq = np.all(right | ~scored, axis=1)
    cols = np.flatnonzero(scored.any(axis=0))
    return {"accuracy": float(right.sum() / max(n_scored, 1)), "exact_match": float(per_seq.mean()) if len(per_seq) else 0.0,
            "n": int(len(tokens)), "n_scored": n_scored,
            "by_position": {str(int(c)): float(right[:, c][scored[:, c]].mean()) for c in cols},
            **({"right": right} if keep_right else {})}


def make_token_evaluator(config: TokenRunConfig, task: TokenTask):
    tokens, targets = task.batch(config.train.seed, "test", 0, config.train.eval_n)

    def evaluate(model):
        r = score_tokens(model, tokens, targets)
        return {"accuracy": r["accuracy"], "exact_match": r["exact_match"], "n": r["n"]}

    return evaluate


# -- training -----------------------------------------------------------------------------------
def prepare_token_run(out: Path, config: TokenRunConfig | None) -> TokenRunConfig:
    if Path(out).is_dir() and is_run_dir(out) and not is_token_run(out):
        kind = run_kind(out)
        raise BadInput(f"{out} holds a {'text-task' if kind == 'text' else kind} run, not a token-task run; choose a new --out")
    return prepare_run(out, config, read=read_token_config, default=TokenRunConfig)


def train_token_run(out: Path, config: TokenRunConfig | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) a token-task run in `out`."""
    out = Path(out)
    config = prepare_token_run(out, config)
    torch.manual_seed(config.train.seed)
    task = config.make_task()
    model = build(config.model, task.vocab_size)
    check_writable(out)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    stream = TokenStream(task, config.train.seed, config.train.batch_size)
    objective = None
    if config.tvp is not None:
        objective = TVPObjective(model, config.tvp, task.arrow, task.comma, task.pad_id)
    trainer = Trainer(model, stream, config.train, out, make_token_evaluator(config, task), quiet=quiet,
                      objective=objective)
    resumed = trainer.resume()
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, config, resumed)
    t0 = time.perf_counter()
    final = trainer.fit() if not trainer.finished else trainer.logged_eval()
    return {"run_dir": str(out), "resumed": resumed, "step": trainer.step, "final_eval": final,
            "stopped_early": trainer.state.get("stopped_early", False), "wall_seconds": time.perf_counter() - t0,
            "train_seconds": trainer.state.get("train_seconds"), "fit_seconds": trainer.state.get("fit_seconds"),
            "n_params": model.n_params(),
            "state_size": model.state_size(task.max_length)}


def load_token_run(run_dir: Path, device: str | None = None):
    """(config, task, model with the newest weights) of a token-task run."""
    run_dir = Path(run_dir)
    if not is_token_run(run_dir):
        raise BadInput(f"{run_dir} is not a token-task run directory")
    config = read_token_config(run_dir)
    task = config.make_task()
    model = build(config.model, task.vocab_size)
    load_newest_weights(run_dir, model)
    return config, task, model.to(pick_device(device or config.train.device)).eval()


def evaluate_token_run(run_dir: Path, n: int, seed: int | None = None,
                       task_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy of a trained run on n test examples, optionally of a changed task (more key-value
    pairs, a longer sequence) to test generalisation; also written to eval/accuracy.json."""
    config, task, model = load_token_run(run_dir)
    if task_overrides:
        task = get_token_task(config.task["name"], **{**task_params(config.task), **task_overrides})
    if task.vocab_size > model.vocab_size:
        raise BadInput(f"the task now needs {task.vocab_size} token ids; the model reads {model.vocab_size}")
    seed = config.train.seed if seed is None else seed
    tokens, targets = task.batch(seed, "test", 0, n)
    result = {"task": config.task["name"], "task_config": task.config.to_json(), "seed": seed,
              **score_tokens(model, tokens, targets)}
    write_json(Path(run_dir) / "eval" / "accuracy.json", result)
    return result
