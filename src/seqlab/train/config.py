"""The config of one training run: task, format, model and trainer settings."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from seqlab.core.configs import Config, int_digit_limit, parse_config, shown_value
from seqlab.core.errors import BadInput
from seqlab.formats.format import FormatConfig
from seqlab.models import FORMAT_POSITION_IDS, TABLE_POSITIONS, ModelConfig, check_arch
from seqlab.models.mixers.registry import parse_mixers
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
    threads: int | None = None  # torch CPU threads; default (or 0): every core
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

    @field_validator("weight_decay", "beta1", "beta2", "grad_clip", "seed", "threads", "eval_length")
    @classmethod
    def _in_range(cls, v: Any, info) -> Any:
        """Each said in the field's own words (train.seed, not train), before anything is built: AdamW refuses bad
        betas and weight decay only once the run has started, torch a seed or a thread count it cannot take."""
        name, bad = info.field_name, None
        if name == "weight_decay" and v < 0:
            bad = "must be >= 0"
        elif name in ("beta1", "beta2") and not 0 <= v < 1:
            bad = "must lie in [0, 1)"
        elif name == "grad_clip" and v < 0:  # a negative max norm would flip the gradients' sign
            bad = "must be >= 0 (0: no clipping)"
        elif name == "seed" and not 0 <= v <= MAX_SEED:
            bad = "must lie in [0, 2**63 - 1] (torch and NumPy take 64-bit seeds)"
        elif name == "threads" and v is not None and not 0 <= v <= MAX_THREADS:
            bad = f"must lie in [1, {MAX_THREADS}] (or be none or 0: every core)"
        elif name == "eval_length" and v is not None and v < 1:
            bad = "must be at least 1 (or none: every training length)"
        if bad:
            raise ValueError(bad)
        return v


MAX_SEED = 2**63 - 1
MAX_THREADS = 1024  # more than any machine's cores; torch.set_num_threads would try to start them all

def available_devices() -> list[str]:
    """The devices this machine's torch can run on."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(name: str) -> None:
    """One line for a device this machine's torch cannot use. Checked where a run is started, not where a
    config is read: a stored config.json names the device it trained on, and a run trained on a GPU is still
    read, reported and evaluated on a CPU."""
    if name == "auto":
        return
    have = available_devices()
    if name not in have:
        build = "this torch build" + (" (a CPU-only build)" if torch.version.cuda is None and name == "cuda" else "")
        raise BadInput(f"train.device={name} is not available to {build} on this machine; "
                       f"use one of {', '.join(['auto', *have])}")


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
        task_config = parse_config(tcls.Config, params, prefix="task.")
        check_decimal_digits(tcls, task_config.max_len, "task.max_len")
        return {"name": tcls.name, **task_config.to_json()}

    @model_validator(mode="after")
    def _positions_agree(self):
        check_arch(self.model.arch)
        if self.train.eval_length is not None:
            check_decimal_digits(task_class(self.task["name"]), self.train.eval_length, "train.eval_length")
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


# -- integers written in decimal -----------------------------------------------------------------
def decimal_digits(tcls, length: int) -> int | None:
    """The most decimal digits a task that computes with integers writes at operands of `length` digits (its
    answer; a partial product is never wider), or None for a task that writes no integers."""
    if not (getattr(tcls, "numeric", False) or hasattr(tcls, "compute")):
        return None
    lengths = (length,) * tcls.n_operands
    return tcls().answer_width(lengths) if hasattr(tcls, "answer_width") else sum(lengths)


def check_decimal_digits(tcls, length: int, key: str) -> None:
    """ValueError where operands of `length` digits make numbers longer than Python writes in decimal
    (sys.get_int_max_str_digits): the task would fail while making its first example."""
    limit = int_digit_limit()
    digits = decimal_digits(tcls, length)
    if not limit or digits is None or digits <= limit:
        return
    lo, hi = 1, length  # the longest operands that fit: digits grow with the length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if decimal_digits(tcls, mid) <= limit else (lo, mid - 1)
    raise ValueError(f"invalid value for '{key}': {shown_value(length)} makes {tcls.name} write numbers of "
                     f"{shown_value(digits)} digits, beyond the {limit} Python writes in decimal; use at most {lo}")


# -- memory --------------------------------------------------------------------------------------
def machine_memory(device: str) -> tuple[int | None, str]:
    """(bytes, what they are) of the memory a run on `device` allocates from; None where it cannot be read."""
    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory, "GPU memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"
    except (AttributeError, ValueError, OSError):  # a platform without these sysconf names
        return None, "RAM"


def resolved_device(name: str) -> str:
    """train.device with auto resolved as the trainer resolves it (CUDA, then MPS, then the CPU)."""
    if name != "auto":
        return name
    have = available_devices()
    return "cuda" if "cuda" in have else "mps" if "mps" in have else "cpu"


def _layer_counts(model) -> dict[str, int]:
    """How many layers each mixer fills (without listing n_layers names: n_layers may be absurd)."""
    pattern = parse_mixers(model.mixers)
    counts: dict[str, int] = {}
    for i, name in enumerate(pattern):
        counts[name] = counts.get(name, 0) + model.n_layers // len(pattern) + (i < model.n_layers % len(pattern))
    return counts


def _mixer_sizes(name: str, model, d: int, seq_len: int) -> tuple[int, int]:
    """(parameters, activation numbers kept per token for backward) of one layer's mixer, roughly."""
    s = getattr(model, name, None)
    if name == "mamba" and s is not None:
        e = s.expand * d
        return 3 * d * e + e * (s.d_conv + 3 * s.d_state + 2 * -(-d // 16) + 2), e * (6 + 2 * s.d_state)
    if name == "linear" and s is not None:
        features = model.n_heads * (1 + s.feature_dim + s.feature_dim**2)  # the Taylor map, the widest
        return 2 * d * d + 2 * d * model.n_heads * s.feature_dim, 4 * d + 2 * features
    # q, k, v and the output; SDPA's fused kernels keep no (L, L) probabilities, but a position bias (alibi,
    # coupling_relative) is a (B, H, L, L) tensor of its own, and coupling_relative learns a table per head.
    params, acts = 4 * d * d, 5 * d
    if name == "attention" and model.position == "coupling_relative":
        params += model.n_heads * (2 * model.relative_clip + 1)
    if name == "attention" and model.position in ("alibi", "coupling_relative"):
        acts += model.n_heads * seq_len
    return params, acts


EVAL_BYTES_PER_TOKEN = 16  # the periodic evaluation's fixed set: tokens and targets as int64


def estimate_training_bytes(model, batch_size: int, seq_len: int, vocab_size: int, eval_n: int = 0) -> int:
    """A rough estimate of the memory one training step takes, in bytes (fp32): weights, gradients and
    AdamW's two moments (16 bytes a parameter); the activations kept for backward (batch_size x seq_len x
    what each layer keeps per token, attention's probabilities included); the logits; the evaluation set."""
    d = getattr(model, "d_model", None)
    if d is None:  # linear self-attention (LSA) on tokens of n_dims + 1 (+ scratch) numbers
        width = model.n_dims + 1 + getattr(model, "scratch", 0)
        params = model.n_layers * 2 * model.n_heads * width * width
        per_token = model.n_layers * model.n_heads * (4 * width + seq_len)
    else:
        hidden = {"gelu": 2, "swiglu": 3}.get(model.mlp, 0) * model.hidden
        # Position tables: the decoder's max_positions rows (learned, abacus, coupling), the in-context
        # learners' 2 * max_points; an in-context learner's read-in of n_dims numbers; the canon convolution.
        table = getattr(model, "max_positions", 0) if model.position in TABLE_POSITIONS else 0
        table += 2 * getattr(model, "max_points", 0) if model.position == "learned" else 0
        params = (vocab_size + table + getattr(model, "n_dims", 0) + getattr(model, "canon", 0)) * d
        per_token = 0
        for name, layers in _layer_counts(model).items():
            mixer_params, mixer_acts = _mixer_sizes(name, model, d, seq_len)
            params += layers * (mixer_params + hidden * d + 4 * d)
            per_token += layers * (mixer_acts + hidden + 4 * d)
        if model.arch == "looped":  # backward runs through every loop of the block
            per_token *= getattr(model, "loops", 1)
    activations = batch_size * seq_len * (per_token + 3 * vocab_size)
    return 16 * params + 4 * activations + EVAL_BYTES_PER_TOKEN * eval_n * seq_len


def _sequence_and_vocab(config) -> tuple[int, int]:
    """(the longest training sequence, the vocabulary) of a run config of any kind, read without building the
    model or any example."""
    from seqlab.tasks.function_classes import FunctionClass
    from seqlab.tasks.token_base import TokenTask

    task = config.make_task()
    if isinstance(task, FunctionClass):  # in-context learning: an x token and a y token per point
        ramp = getattr(getattr(config, "curriculum", None), "points", None)
        return 2 * max(task.config.n_points, ramp.end if ramp else 0), 1
    if isinstance(task, TokenTask):
        return task.max_length, task.vocab_size
    # A text task through a format: operands, answer, separators; index hints at most double it.
    n = max(task.config.max_len, getattr(config.train, "eval_length", None) or 0)
    answer = decimal_digits(type(task), n) or n
    return 2 * (task.n_operands * n + answer + task.n_operands + 3), len(task.alphabet()) + len(task.symbols()) + 8


def _gib(n: int) -> str:
    return f"{min(n, 10**300) / 2**30:.3g} GiB"  # a float of at most 1e300: absurd sizes still print


def check_fits_in_memory(config, device: str | None = None) -> None:
    """BadInput, before any model is built, where training `config` would need more memory than the machine
    has (`estimate_training_bytes`, compared with the RAM, or the GPU's memory on CUDA). Under torchrun each
    process holds its share of the global batch."""
    from seqlab.train.distributed import world

    device = resolved_device(device or config.train.device)
    have, what = machine_memory(device)
    if have is None:
        return
    seq_len, vocab = _sequence_and_vocab(config)
    batch = -(-config.train.batch_size // world().size)
    need = estimate_training_bytes(config.model, batch, seq_len, vocab, config.train.eval_n)
    if need > have:
        m, t = config.model, config.train
        size = f"model.d_model={m.d_model}, " if hasattr(m, "d_model") else ""
        evals = f", train.eval_n={t.eval_n}" if 2 * EVAL_BYTES_PER_TOKEN * t.eval_n * seq_len > need else ""
        raise BadInput(f"training needs about {_gib(need)} ({size}n_layers={m.n_layers}, train.batch_size={t.batch_size}"
                       f"{evals}, sequences of up to {seq_len} tokens) but this machine has {_gib(have)} of {what}: "
                       "make the model, the batch or the sequences smaller")
