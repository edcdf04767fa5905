"""The trainer: AdamW, a warmup schedule, gradient clipping, periodic evaluation, checkpoints, resume.

The trainer knows nothing of decoding: periodic evaluation is a function passed in by the caller,
which keeps `train` above `eval` in the layer order.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from seqlab.data.text import Stream
from seqlab.core.console import console
from seqlab.core.errors import RunFailed
from seqlab.core.io import read_jsonl
from seqlab.train import distributed
from seqlab.train.checkpoint import check_state, latest_checkpoint, load_checkpoint, save_checkpoint
from seqlab.train.config import TrainConfig, check_device
from seqlab.train.metrics_file import keep_metrics_up_to
from seqlab.train.schedule import lr_at
from seqlab.train.tracking import Trackers, open_trackers

Evaluator = Callable[[torch.nn.Module], dict[str, Any]]


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        check_device(name)  # one line for cuda on a CPU-only build, before anything is written
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_optimizer(model: torch.nn.Module, c: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: not on norms, biases, attention bias tables
    (`rel_bias`), whose large values are what keeps attention sharp on long inputs, or parameters marked
    `_no_weight_decay` (Mamba's A_log and D: decaying A_log towards 0 would pull every decay rate to 1)."""
    named = list(model.named_parameters())

    def decays(n: str, p: torch.nn.Parameter) -> bool:  # Mamba marks A_log and D, as mamba-ssm does
        return p.dim() >= 2 and not n.endswith("rel_bias") and not getattr(p, "_no_weight_decay", False)

    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), foreach=True)


class Trainer:
    def __init__(self, model, stream: Stream, config: TrainConfig, run_dir: Path,
                 evaluate: Evaluator | None = None, quiet: bool = False, objective=None):
        """`objective(*batch.model_args())` is the training loss: `model.loss` unless given (the TVP-loss
        wraps the model's own loss); checkpoints hold the model's weights either way."""
        self.c, self.stream, self.run_dir = config, stream, Path(run_dir)
        self.world = distributed.world()  # under torchrun: this process's rank; rank 0 alone writes and prints
        self.device = distributed.start(self.world, pick_device(config.device), config.batch_size)
        self.model = model.to(self.device)
        self.opt = make_optimizer(self.model, config)
        self.evaluate = evaluate
        self.quiet = quiet or not self.world.is_main
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.trackers = Trackers()  # TensorBoard, W&B: what train.tracking names, open while fit runs
        self.step = 0
        self.checkpoint_step: int | None = None  # the newest checkpoint's step, None before the first
        # loss_window: (sum, count) of losses since the last log line, kept in checkpoints so a resumed
        # run logs exactly the averages an uninterrupted one would.
        # train_seconds: time in training steps; fit_seconds: all of fit (evaluation and checkpoints too),
        # both summed over resumes, so a recipe rerun on a finished run still knows what it cost.
        self.state: dict[str, Any] = {"stopped_early": False, "best_eval": None, "train_seconds": 0.0, "fit_seconds": 0.0,
                                      "loss_window": [0.0, 0]}
        loss = objective if objective is not None else self.model.loss
        self._forward = distributed.wrap(self.model, torch.compile(loss) if config.compile else loss, self.world, self.device)

    # -- resume --------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the newest checkpoint if there is one; metrics.jsonl keeps what was logged up to it."""
        path = latest_checkpoint(self.run_dir)
        resumed = path is not None
        if resumed:
            state = load_checkpoint(path, self.model, self.opt)
            self.step = self.checkpoint_step = state["step"]
            self.state.update({k: state[k] for k in self.state if k in state})
            check_state(self.state, path)
        # else: killed before its first checkpoint, so it starts again from step 0
        if self.world.is_main:  # every rank loads the checkpoint; one writes the metrics
            keep_metrics_up_to(self.metrics_path, self.step)
        return resumed

    @property
    def finished(self) -> bool:
        return self.step >= self.c.steps or self.state.get("stopped_early", False)

    # -- the loop ------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda" and self.c.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_step(self, step: int, batch) -> tuple[float, int]:
        c = self.c
        lr = lr_at(step, lr=c.lr, steps=c.steps, warmup=c.warmup, schedule=c.schedule,
                   min_lr_ratio=c.min_lr_ratio, decay_frac=c.decay_frac)
        for g in self.opt.param_groups:
            g["lr"] = lr
        batch = distributed.shard(batch, self.world).to(self.device)  # this rank's rows of the global batch
        with self._autocast():
            loss = self._forward(*batch.model_args())
        loss, value = distributed.global_mean(loss, batch, self.world, self.model)  # value: the global batch's loss
        if not math.isfinite(value):
            kept = (f"The checkpoint of step {self.checkpoint_step} is kept" if self.checkpoint_step is not None
                    else f"No checkpoint was written yet (the first comes at step {c.checkpoint_every})")
            raise RunFailed(f"loss became {value} at step {step + 1}; stopped. {kept} (try a lower train.lr than {c.lr})")
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return value, batch.n_tokens * self.world.size

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log(record["step"], record)

    def _checkpoint(self) -> None:
        if self.world.is_main:
            save_checkpoint(self.run_dir, self.step, self.model, self.opt, self.state, keep=self.c.keep_checkpoints)
        self.checkpoint_step = self.step

    def _progress(self) -> Progress:
        cols = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TimeRemainingColumn()]
        return Progress(*cols, console=console(stderr=True), disable=self.quiet, transient=False)

    def fit(self) -> dict[str, Any]:
        """Train to `steps` (or to the target accuracy), checkpointing on the way. Returns the last eval."""
        c = self.c
        self.model.train()
        last_eval: dict[str, Any] | None = None
        tok_sum, t_log = 0, time.perf_counter()
        fit_start, fit_before = t_log, self.state["fit_seconds"]  # fit_seconds as of this fit's start
        batches = self.stream.prefetch(self.step, c.steps)
        with self._progress() as bar, contextlib.closing(batches), \
                contextlib.closing(open_trackers(c, self.run_dir, self.step) if self.world.is_main
                                   else Trackers()) as self.trackers:
            task_id = bar.add_task("train", total=c.steps, completed=self.step, info="")
            while not self.finished:
                t0 = time.perf_counter()
                loss, n_tok = self._train_step(self.step, next(batches))
                self.state["train_seconds"] += time.perf_counter() - t0
                self.step += 1
                window = self.state["loss_window"]
                window[0], window[1] = window[0] + loss, window[1] + 1
                tok_sum += n_tok
                record: dict[str, Any] = {}
                if self.step % c.log_every == 0 or self.step == c.steps:
                    now = time.perf_counter()
                    record.update(loss=window[0] / window[1], lr=self.opt.param_groups[0]["lr"],
                                  tokens_per_s=tok_sum / max(now - t_log, 1e-9))
                    self.state["loss_window"] = [0.0, 0]
                    tok_sum, t_log = 0, now
                if self.evaluate is not None and (self.step % c.eval_every == 0 or self.step == c.steps):
                    last_eval = distributed.on_main(lambda: self.evaluate(self.model), self.world)
                    self.model.train()
                    record.update({f"eval_{k}": v for k, v in last_eval.items() if isinstance(v, (int, float))})
                    score = last_eval.get(c.target_metric)  # None for a regression evaluator
                    if score is not None:
                        self.state["best_eval"] = max(self.state["best_eval"] or 0.0, score)
                        if c.target_accuracy is not None and score >= c.target_accuracy:
                            self.state["stopped_early"] = True
                    t_log = time.perf_counter()  # evaluation time is not training throughput
                if record and self.world.is_main:
                    self._log({"step": self.step, **record, "train_seconds": round(self.state["train_seconds"], 3)})
                    info = f"loss {record['loss']:.4f}" if "loss" in record else ""
                    if "tokens_per_s" in record:
                        info += f"  {record['tokens_per_s']:,.0f} tok/s"
                    if last_eval is not None and c.target_metric in last_eval:
                        info += f"  acc {last_eval[c.target_metric]:.3f}"
                    elif last_eval is not None and "error" in last_eval:
                        info += f"  err {last_eval['error']:.3f}"
                    bar.update(task_id, info=info)
                if self.step % c.checkpoint_every == 0 or self.finished:
                    self.state["fit_seconds"] = fit_before + time.perf_counter() - fit_start
                    self._checkpoint()
                bar.update(task_id, completed=self.step)
        return last_eval or {}

    def logged_eval(self) -> dict[str, Any]:
        """The last periodic evaluation in metrics.jsonl, keys without their `eval_` prefix (what `fit`
        returned when the run ended, for a run that is already finished)."""
        evals = [r for r in read_jsonl(self.metrics_path) if any(k.startswith("eval_") for k in r)]
        return {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval_")} if evals else {}
