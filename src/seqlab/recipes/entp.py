"""Encoder-only next-token prediction (Ewer et al. 2025, "ENTP"): Triplet-Counting, decoder against encoder.

Count3 extends a random seed sequence by a_{n+1} = #{(i, j) : a_i + a_j + a_n = 0 (mod n)} mod n. Each new
token depends on every earlier one *through the newest*: a decoder's states for tokens 1..n-1 were computed
before a_n existed, so it must do the whole pair count in the layers above token n. The encoder reruns
every layer over the prefix for each prediction, so each token's state can already read a_n. The two
models have the same weights' shapes (equal parameters) and train the same number of steps on the same
batches; the price of the encoder is one pass per scored position, reported as a ratio of training time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from seqlab.eval.plots import accuracy_by_step
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import results_header
from seqlab.tasks.token_base import IGNORE, get_token_task
from seqlab.runs import evaluate_tokens, make_config, train as train_run

BUDGETS = {
    "smoke": {
        "task": {"length": 12, "seed_size": 4, "seed_max": 8},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 1},
        "train": {"steps": 16, "batch_size": 8, "lr": 1e-3, "warmup": 2, "eval_every": 8, "eval_n": 16, "log_every": 8,
                  "checkpoint_every": 8, "target_metric": "accuracy"},
        "n_test": 32,
    },
    "cpu": {
        # The encoder pays one pass per scored position: at length 24 (16 scored) a step of 4 x 64 took
        # 0.8 s on one core; length 16 with 8 seed tokens scores 8 positions. seed_max = seed_size, as in
        # ENTP's 16 and 16: every token is then below the prefix length n, so x mod n is x itself. With
        # seed tokens up to 15 and n from 6 (an earlier setting) the residues wrap, and neither model left
        # the majority-class plateau (16.2%) in 3,000 steps.
        "task": {"length": 16, "seed_size": 8, "seed_max": 8},
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4},
        "train": {"steps": 5000, "batch_size": 64, "lr": 1e-3, "warmup": 200, "eval_every": 250, "eval_n": 256,
                  "log_every": 100, "checkpoint_every": 500, "target_metric": "accuracy"},
        "n_test": 1000,
    },
    "gpu": {  # ENTP's setting: block size 64, seed 16
        "task": {"length": 64, "seed_size": 16, "seed_max": 16},
        "model": {"n_layers": 6, "d_model": 384, "n_heads": 6},
        "train": {"steps": 20000, "batch_size": 64, "lr": 5e-4, "warmup": 1000, "eval_every": 1000, "eval_n": 1000,
                  "log_every": 200, "checkpoint_every": 2000, "target_metric": "accuracy"},
        "n_test": 2000,
    },
}


def majority_baseline(task_settings: dict[str, Any], seed: int, n_test: int, n_train: int = 4000) -> float:
    """The accuracy of answering, at each scored position, the target most frequent there in training
    sequences: the plateau a model sits on before it computes anything (Count3's answers are far from
    uniform: a count mod n is 0 much more often than 1/n)."""
    task = get_token_task("count3", **task_settings)
    _, train_targets = task.batch(seed, "train", 0, n_train)
    _, test_targets = task.batch(seed, "test", 0, n_test)
    right = total = 0
    for col in range(train_targets.shape[1]):
        seen = train_targets[:, col][train_targets[:, col] != IGNORE]
        wanted = test_targets[:, col][test_targets[:, col] != IGNORE]
        if len(seen) and len(wanted):
            right += int((wanted == np.bincount(seen).argmax()).sum())
        total += len(wanted)
    return right / max(total, 1)


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    metrics: dict[str, Any] = {}
    curves: dict[str, dict[int, float]] = {}
    for arch in ("decoder", "encoder"):
        config = make_config({"task": {"name": "count3", **s["task"]},
                                       "model": {"arch": arch, "position": "rope", **s["model"]},
                                       "train": {**s["train"], "seed": ctx.seed}})
        run_dir = ctx.run_dir(arch)
        summary = train_run(run_dir, config, quiet=ctx.quiet)
        ev = evaluate_tokens(run_dir, s["n_test"])
        metrics.update({f"{arch}.accuracy": ev["accuracy"], f"{arch}.exact_match": ev["exact_match"],
                        f"{arch}.train_seconds": round(summary["train_seconds"] or 0.0, 1),
                        f"{arch}.n_params": summary["n_params"],
                        f"{arch}.steps": summary["step"]})
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        curves[arch] = {r["step"]: r["eval_accuracy"] for r in rows if "eval_accuracy" in r}
    metrics["majority_baseline"] = majority_baseline(s["task"], ctx.seed, s["n_test"])
    metrics["encoder_over_decoder_train_time"] = round(
        metrics["encoder.train_seconds"] / max(metrics["decoder.train_seconds"], 1e-9), 2)
    metrics["equal_parameters"] = metrics["encoder.n_params"] == metrics["decoder.n_params"]
    accuracy_by_step(curves, ctx.out / "plots" / "accuracy_by_step.png", title=f"Count3, length {s['task']['length']}")
    return Outcome(metrics=metrics, runs={"decoder": "runs/decoder", "encoder": "runs/encoder"},
                   artifacts=["plots/accuracy_by_step.png"],
                   extra={"curves": {k: {str(a): b for a, b in v.items()} for k, v in curves.items()}})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    rows = [f"| {a} | {m[f'{a}.n_params']:,} | {m[f'{a}.steps']} | {m[f'{a}.train_seconds']} | {m[f'{a}.accuracy']:.4f} "
            f"| {m[f'{a}.exact_match']:.4f} |" for a in ("decoder", "encoder") if f"{a}.accuracy" in m]
    return (results_header(results, "ENTP: Triplet-Counting, decoder against encoder-only")
            + "| model | parameters | steps | training seconds | accuracy (scored tokens) | exact match (sequences) |\n"
            + "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
            + f"The encoder's training took {m.get('encoder_over_decoder_train_time')}x the decoder's time "
            + "for the same steps. Answering each position's most frequent training target scores "
            + f"{m.get('majority_baseline', float('nan')):.4f}: the plateau before a model computes anything.\n\n"
            + "![accuracy by step](plots/accuracy_by_step.png)\n")


register(Recipe(
    name="entp",
    paper="Ewer et al. 2025, ENTP: Encoder-only Next Token Prediction",
    description="Triplet-Counting: a decoder against an encoder-only model with equal parameters and steps",
    budgets=BUDGETS,
    claims=[
        Claim("the encoder-only model counts triplets: accuracy >= 95%", "Ewer et al. 2025", metric="encoder.accuracy",
              threshold=0.95),
        Claim("the decoder of equal size and steps does not: accuracy <= 50%", "Ewer et al. 2025", metric="decoder.accuracy",
              threshold=0.5, direction="at_most"),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 30.0},
))
