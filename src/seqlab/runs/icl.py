"""In-context learning runs: a function class, a model that reads vector-valued prompts, Garg's curriculum,
and error against the number of in-context examples k beside classical baselines on the same prompts.

config.json holds `"kind": "icl"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, task_params, task_section
from seqlab.core.errors import BadInput
from seqlab.core.io import write_json
from seqlab.data.prompts import Curriculum, PromptStream
from seqlab.eval.icl_curves import at_k, error_curve
from seqlab.eval.icl_scoring import baseline_curves, is_slow, model_predictions, score
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model
from seqlab.models.lsa import LSAConfig
from seqlab.runs.directory import parse_lengths
from seqlab.runs.kind import KINDS, EvalRequest, Parts, RunKind
from seqlab.tasks.function_classes import FUNCTIONS, FunctionClass, get_function
from seqlab.train import TrainConfig


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

    def make_task(self) -> FunctionClass:
        return self.function_class()


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


def evaluate_icl(run, n: int, baselines: list[str] = (), slow_n: int = 200, slow_ks: list[int] = (),
                 shift: str | None = None, loops: int | None = None, seed: int | None = None,
                 label: str | None = None, device: str | None = None, n_points: int | None = None) -> dict[str, Any]:
    """Error curves of an in-context run's model (a run directory or a loaded run), and of `baselines`, on n
    test prompts of `n_points` points (default: the task's); writes eval/<label>.json."""
    from seqlab.runs import load

    run = run if not isinstance(run, (str, Path)) else load(run, device)
    config, fc, model = run.config, run.task, run.model
    seed = config.train.seed if seed is None else seed
    p = fc.prompts(seed, "test", 0, n, shift=shift, n_points=n_points)
    scored = getattr(p, "scored", None)
    errors = score(fc, model_predictions(model, p.xs, p.ys, loops), p.ys, scored)
    curves = {"model": error_curve(errors, seed=seed)}
    base, skipped = baseline_curves(fc, p.xs, p.ys, list(baselines), slow_n, list(slow_ks), seed, scored)
    curves.update(base)
    # Slow baselines see only the first slow_n prompts: the model on those same prompts, to compare with.
    subset = error_curve(errors[:slow_n], seed=seed) if any(map(is_slow, base)) and slow_n < n else None
    result = {"run_dir": str(run.run_dir), "task": fc.name, "n_dims": fc.config.n_dims, "n": n, "seed": seed,
              "shift": shift, "loops": loops, "n_points": p.xs.shape[1], "error_scale": fc.error_scale, "kind": fc.kind,
              "curves": curves, "skipped": skipped, "model_on_slow_prompts": subset, "slow_n": slow_n}
    default = "error_by_points" + (f".{shift}" if shift else "") + (f".{n_points}" if n_points else "")
    write_json(Path(run.run_dir) / "eval" / f"{label or default}.json", result)
    return result


class ICLKind(RunKind):
    name = "icl"
    title = "in-context learning"
    config_cls = ICLRunConfig
    tasks = FUNCTIONS
    task_label = "function"
    main_metric = "error"
    task_group = "in-context function classes"
    reads_tokens = False
    task_noun = "an in-context function class"

    def build(self, config: ICLRunConfig, device) -> Parts:
        fc = config.function_class()
        model = build_icl_model(config.model)
        stream = PromptStream(fc, config.train.seed, config.train.batch_size, config.curriculum)
        return Parts(fc, model, stream, make_icl_evaluator(config, fc))

    def eval_line(self, final: dict[str, Any]) -> str:
        return f"mean error {final['error']:.4f} over every prefix of the test prompts"

    def load_parts(self, config: ICLRunConfig):
        return config.function_class(), None, build_icl_model(config.model)

    def evaluate(self, run, request: EvalRequest) -> dict[str, Any]:
        names = [b for b in request.baselines.split(",") if b]
        ks = parse_lengths(request.lengths) if request.lengths else []
        return evaluate_icl(run, request.n, names, slow_n=min(request.n, 200), slow_ks=ks, seed=request.seed)

    def eval_tables(self, result: dict[str, Any], request: EvalRequest) -> list:
        from rich.table import Table

        curves = result["curves"]
        wanted = parse_lengths(request.lengths) if request.lengths else curves["model"]["k"]
        table = Table(title=f"{result['task']}: error against in-context examples k (n={request.n}, d={result['n_dims']})")
        table.add_column("k", justify="right")
        for label in curves:
            table.add_column(label, justify="right")
        for k in wanted:
            cells = [at_k(c, k) for c in curves.values()]
            table.add_row(str(k), *("—" if v is None else f"{v:.4f}" for v in cells))
        return [table, *(f"[dim]{name} skipped: {why}[/dim]" for name, why in result["skipped"].items())]

    def predict(self, run, xs: np.ndarray, ys: np.ndarray, loops: int | None = None) -> np.ndarray:
        return model_predictions(run.model, np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32), loops)

    # -- tasks ---------------------------------------------------------------------------------
    def make_task(self, name: str, params: dict[str, Any]) -> FunctionClass:
        return get_function(name, **params)

    def task_tag(self, name: str) -> str:
        return f"in-context function class {super().task_tag(name)}"


ICL = KINDS.register(ICLKind(), name="icl")
