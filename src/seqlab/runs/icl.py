"""In-context learning runs: a function class, a vector-reading model, the trainer, and error curves.

The run directory has DESIGN.md's layout; `config.json` holds `"kind": "icl"` so `seqlab eval` and
`seqlab report` know to score it by normalised squared error against the number of in-context
examples rather than by exact match.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, apply_overrides, parse_config, task_params, task_section
from seqlab.core.errors import BadInput
from seqlab.data.prompts import Curriculum, PromptStream
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model
from seqlab.models.lsa import LSAConfig
from seqlab.runs.text import check_writable, is_run_dir, load_newest_weights, prepare_run, read_config_as, run_kind, write_run_config
from seqlab.tasks.function_classes import FunctionClass, get_function
from seqlab.train import TrainConfig, Trainer, pick_device


class ICLRunConfig(Config):
    kind: Literal["icl"] = "icl"
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "linear-regression"}, validate_default=True)
    model: ICLModelConfig | LSAConfig = Field(default_factory=ICLModelConfig, discriminator="arch")
    train: TrainConfig = Field(default_factory=TrainConfig)
    curriculum: Curriculum = Field(default_factory=Curriculum)

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> dict[str, Any]:
        return task_section(v, get_function, "a function class")

    @model_validator(mode="before")
    @classmethod
    def _model_reads_task_dims(cls, data: Any) -> Any:
        """The model's n_dims follows the task's unless it is given (and then they must agree)."""
        if isinstance(data, dict) and isinstance(data.get("task"), dict) and "n_dims" in data["task"]:
            model = dict(data.get("model") or {}) if not isinstance(data.get("model"), Config) else data["model"].to_json()
            model.setdefault("n_dims", data["task"]["n_dims"])
            data = {**data, "model": model}
        if isinstance(data, dict) and isinstance(data.get("model"), dict):  # the default architecture
            data = {**data, "model": {"arch": "transformer", **data["model"]}}
        return data

    @model_validator(mode="after")
    def _check(self):
        fc = self.function_class()
        if self.model.n_dims != fc.config.n_dims:
            raise ValueError(f"model.n_dims={self.model.n_dims} but the task has n_dims={fc.config.n_dims}")
        top = max(fc.config.n_points, self.curriculum.points.end if self.curriculum.points else 0)
        if getattr(self.model, "position", None) == "learned" and top > self.model.max_points:
            raise ValueError(f"prompts of {top} points need model.max_points >= {top}")
        return self

    def function_class(self) -> FunctionClass:
        return get_function(self.task["name"], **task_params(self.task))


def resolve_icl_config(base: dict[str, Any] | None = None, overrides: list[str] = ()) -> ICLRunConfig:
    return parse_config(ICLRunConfig, apply_overrides(base or {}, list(overrides)))


def is_icl_run(run_dir: Path) -> bool:
    return run_kind(run_dir) == "icl"


def read_icl_config(run_dir: Path) -> ICLRunConfig:
    return read_config_as(run_dir, ICLRunConfig)


# -- scoring ------------------------------------------------------------------------------------
def score(fc: FunctionClass, preds: np.ndarray, ys: np.ndarray, scored: np.ndarray | None = None) -> np.ndarray:
    """Per-prompt, per-k error: squared error / fc.error_scale for regression (Garg's normalisation,
    so predicting 0 scores about 1), and 0/1 error of the sign for classification. Points outside
    `scored` (Park's outliers, vector-mqar's context) are NaN: no mean reads them."""
    if preds.ndim == 1:  # a model that predicts the last point only (linear self-attention)
        preds = np.concatenate([np.full((len(ys), ys.shape[1] - 1), np.nan), preds[:, None]], axis=1)
    if fc.kind == "classification":
        err = np.where(np.isnan(preds), np.nan, (np.sign(preds) != np.sign(ys)).astype(np.float64))
    else:
        err = (preds.astype(np.float64) - ys) ** 2 / fc.error_scale
    return err if scored is None else np.where(scored[:, : err.shape[1]], err, np.nan)


@torch.no_grad()
def model_predictions(model, xs: np.ndarray, ys: np.ndarray, loops: int | None = None, batch: int = 256) -> np.ndarray:
    """(n, k) predictions of every prefix, in batches, on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(xs), batch):
        x = torch.from_numpy(xs[s:s + batch]).to(dev)
        y = torch.from_numpy(ys[s:s + batch]).to(dev)
        out.append(model(x, y, loops).float().cpu().numpy())
    return np.concatenate(out)


def make_icl_evaluator(config: ICLRunConfig, fc: FunctionClass):
    """Mean error over every prefix of eval_n test prompts (full dims and points), for training logs."""
    p = fc.prompts(config.train.seed, "test", 0, config.train.eval_n)

    def evaluate(model):
        err = score(fc, model_predictions(model, p.xs, p.ys), p.ys, getattr(p, "scored", None))
        out = {"error": float(np.nanmean(err))}
        if not np.isnan(err[:, -1]).all():  # a last point that is never scored (an outlier) has no error
            out["error_last"] = float(np.nanmean(err[:, -1]))
        return out

    return evaluate


# -- training -----------------------------------------------------------------------------------
def prepare_icl_run(out: Path, config: ICLRunConfig | None) -> ICLRunConfig:
    if Path(out).is_dir() and is_run_dir(out) and not is_icl_run(out):
        raise BadInput(f"{out} holds a token-model run, not an in-context learning run; choose a new --out")
    return prepare_run(out, config, read=read_icl_config, default=ICLRunConfig)


def train_icl_run(out: Path, config: ICLRunConfig | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) an in-context learning run in `out`."""
    out = Path(out)
    config = prepare_icl_run(out, config)
    torch.manual_seed(config.train.seed)
    fc = config.function_class()
    model = build_icl_model(config.model)
    check_writable(out)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    stream = PromptStream(fc, config.train.seed, config.train.batch_size, config.curriculum)
    trainer = Trainer(model, stream, config.train, out, make_icl_evaluator(config, fc), quiet=quiet)
    resumed = trainer.resume()
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, config, resumed)
    t0 = time.perf_counter()
    final = trainer.fit() if not trainer.finished else {}
    return {"run_dir": str(out), "resumed": resumed, "step": trainer.step, "final_eval": final,
            "wall_seconds": time.perf_counter() - t0, "train_seconds": trainer.state.get("train_seconds"),
            "n_params": model.n_params()}


def load_icl_run(run_dir: Path, device: str | None = None):
    """(config, function class, model with the newest weights) of an in-context learning run."""
    run_dir = Path(run_dir)
    if not is_icl_run(run_dir):
        raise BadInput(f"{run_dir} is not an in-context learning run directory")
    config = read_icl_config(run_dir)
    model = build_icl_model(config.model)
    load_newest_weights(run_dir, model)
    return config, config.function_class(), model.to(pick_device(device or config.train.device)).eval()
