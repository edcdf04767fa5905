"""The config of one training run: task, format, model and trainer settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, parse_config
from seqlab.formats.format import FormatConfig
from seqlab.models import FORMAT_POSITION_IDS, ModelConfig, check_arch
from seqlab.tasks import task_class


class TrainConfig(Config):
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"  # wsd: constant, then linear decay
    decay_frac: float = 0.2  # share of steps the wsd schedule spends decaying
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    bf16: bool = True  # bf16 autocast where the device is CUDA
    compile: bool = False
    threads: int | None = None  # torch CPU threads; default: every core
    log_every: int = 50
    eval_every: int = 250
    eval_n: int = 256
    eval_length: int | None = None  # evaluate at this operand length (default: every training length alike)
    target_accuracy: float | None = None  # stop early once periodic evaluation reaches it
    # What target_accuracy and best_eval read: a sequence's exact match, or the share of scored tokens
    # right (multi-query recall asks one question per query and scores each, as Zoology does).
    target_metric: Literal["exact_match", "accuracy"] = "exact_match"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # Trackers beside metrics.jsonl (see seqlab.train.tracking). They show a run and do not change it, so a
    # run may be resumed with others than it started with.
    tracking: list[Literal["tensorboard", "wandb"]] = []
    wandb_project: str = "seqlab"
    wandb_mode: Literal["auto", "offline", "online"] = "auto"  # auto: online only where WANDB_API_KEY is set

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking(cls, v: Any) -> Any:
        """train.tracking=tensorboard,wandb (or [tensorboard], or none) on the command line, as a list."""
        if isinstance(v, str):
            v = v.strip().strip("[]")
            v = [] if v.lower() in ("", "none", "null") else [x.strip().strip("'\"") for x in v.split(",")]
        return list(dict.fromkeys(v)) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v

    @model_validator(mode="after")
    def _check(self):
        positive = ("steps", "batch_size", "log_every", "eval_every", "eval_n", "checkpoint_every", "keep_checkpoints")
        for k in positive:
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 < self.decay_frac <= 1:
            raise ValueError("min_lr_ratio must lie in [0, 1] and decay_frac in (0, 1]")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError("target_accuracy must lie in (0, 1]")
        return self


# Train settings that say how a run is watched, not what it is: a resumed run may change them.
TRACKING_KEYS = ("tracking", "wandb_project", "wandb_mode")

DEFAULT_TASK = "addition"


class RunConfig(Config):
    task: dict[str, Any] = Field(default_factory=lambda: {"name": DEFAULT_TASK}, validate_default=True)
    format: FormatConfig = Field(default_factory=FormatConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> dict[str, Any]:
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict):
            raise ValueError("task must be a name or a mapping with a name, e.g. task.name=addition")
        v = {"name": DEFAULT_TASK, **v}
        params = {k: x for k, x in v.items() if k != "name"}
        tcls = task_class(v["name"])
        return {"name": tcls.name, **parse_config(tcls.Config, params, prefix="task.").to_json()}

    @model_validator(mode="after")
    def _positions_agree(self):
        check_arch(self.model.arch)
        need = FORMAT_POSITION_IDS.get(self.model.position, "standard")
        have = self.format.position_ids
        if have not in ("auto", need):
            raise ValueError(f"model.position={self.model.position} needs format.position_ids={need} (or auto), not {have}")
        return self

    @property
    def format_position_ids(self) -> str:
        return FORMAT_POSITION_IDS.get(self.model.position, "standard")

    def make_task(self, **overrides):
        tcls = task_class(self.task["name"])
        params = {k: v for k, v in self.task.items() if k != "name"}
        params.update(overrides)
        return tcls(tcls.Config(**params))
