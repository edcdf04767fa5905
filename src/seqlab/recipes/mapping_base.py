"""What the three recipes on in-context mapping tasks share (task-vectors, tvp, superposition): the budgets
of a decoder trained on `icl-map` prompts with one map per prompt, and its training."""

from __future__ import annotations

from typing import Any

from seqlab.core.configs import task_params
from seqlab.recipes.base import Context
from seqlab.runs import load, make_config, train as train_run

# Training prompts: 4 to 8 demonstrations of one map, words of 3 symbols over 10; the maps are the issue's
# examples (add k, copy the symbol at h, reverse, a fixed permutation; add1 is "next letter").
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "task": {"maps": "add1,copy0,reverse", "n_symbols": 5, "word_len": 2, "n_demos": 3, "n_demos_min": 2},
        "model": {"n_layers": 2, "d_model": 16, "n_heads": 2},
        "train": {"steps": 16, "batch_size": 8, "lr": 1e-3, "warmup": 2, "eval_every": 8, "eval_n": 16, "log_every": 8,
                  "checkpoint_every": 8},
        "n_vector": 8, "n_eval": 8, "layer": 1, "pairs": [["add1", "reverse"]], "triples": [["add1", "copy0", "reverse"]],
        "demos": 4, "long_demos": 6,
    },
    "cpu": {
        "task": {"maps": "add1,add2,copy0,copy2,reverse,perm", "n_symbols": 10, "word_len": 3, "n_demos": 8,
                 "n_demos_min": 4},
        # 4 x 64: a step of 4 x 128 took 0.47 s on one shared core (72 tokens, batch 64), and the tvp recipe
        # trains two models
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4},
        "train": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup": 200, "eval_every": 500, "eval_n": 256,
                  "log_every": 100, "checkpoint_every": 500},
        "n_vector": 100, "n_eval": 200, "layer": 2,
        "pairs": [["add1", "reverse"], ["copy0", "add2"], ["perm", "copy2"]],
        "triples": [["add1", "copy0", "reverse"]],
        "demos": 10, "long_demos": 16,
    },
    "gpu": {
        "task": {"maps": "add1,add2,copy0,copy2,reverse,perm", "n_symbols": 26, "word_len": 4, "n_demos": 16,
                 "n_demos_min": 4},
        "model": {"n_layers": 8, "d_model": 256, "n_heads": 8},
        "train": {"steps": 20000, "batch_size": 128, "lr": 5e-4, "warmup": 1000, "eval_every": 2000, "eval_n": 1000,
                  "log_every": 200, "checkpoint_every": 2000},
        "n_vector": 200, "n_eval": 1000, "layer": 4,
        "pairs": [["add1", "reverse"], ["copy0", "add2"], ["perm", "copy2"]],
        "triples": [["add1", "copy0", "reverse"], ["add2", "perm", "copy2"]],
        "demos": 20, "long_demos": 32,
    },
}


def train_mapping_model(ctx: Context, label: str, tvp: dict[str, Any] | None = None):
    """Train (or resume) the decoder `label` of a recipe; returns (summary, task params, model)."""
    s = ctx.settings
    config = make_config({"task": {"name": "icl-map", **s["task"]},
                                   "model": {"position": "rope", **s["model"]},
                                   "train": {**s["train"], "seed": ctx.seed},
                                   **({"tvp": tvp} if tvp else {})})
    run_dir = ctx.run_dir(label)
    summary = train_run(run_dir, config, quiet=ctx.quiet)
    model = load(run_dir).model
    model.eval()
    return summary, task_params(config.task), model


def map_names(params: dict[str, Any]) -> list[str]:
    return [m.strip() for m in str(params["maps"]).split(",") if m.strip()]
