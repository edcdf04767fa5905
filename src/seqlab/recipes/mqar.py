"""Multi-query associative recall (Arora et al. 2023, "Zoology"): which mixers can recall, and at what state size?

An MQAR sequence lists key-value pairs, then asks every key again at power-law-spaced positions; the model
must answer each query with its value. Attention looks the key up among the tokens it keeps; a recurrent
mixer (Mamba, linear attention) must already have written every pair into its fixed-size state, so its
accuracy follows the state it keeps per sequence (Zoology's Figure 2). Two parts:

1. `speed` and `default`: a 2-layer attention model of width 64 (with a width-2 convolution on its
   embeddings, see CANON) trained until 99% of the test queries are right, at the vocabulary of 256
   used for timing Zoology's code and at the task's default (8,192): the seconds that takes, training
   and periodic evaluation included.
2. `grid`: every mixer family at several widths on a harder setting (more pairs in a longer sequence),
   accuracy against state size (numbers kept per sequence, `model.state_size(L)`), one plot.
"""

from __future__ import annotations

from typing import Any

from seqlab.eval.plots import accuracy_by_state_size
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import results_header
from seqlab.runs import evaluate_tokens, make_config, train as train_run

# The mixer families of the grid: model settings laid over the budget's model section. Mamba's block is
# its own mixer and gate (no MLP), as in Gu & Dao and Zoology's Mamba configs; `based` is Zoology's recipe
# for recall at small state: Taylor linear attention beside a short sliding window.
FAMILIES: dict[str, dict[str, Any]] = {
    "attention": {"mixers": "attention"},
    "mamba": {"mixers": "mamba", "mlp": "none", "norm": "rmsnorm"},
    "linear (taylor)": {"mixers": "linear", "linear": {"feature_map": "taylor", "feature_dim": 16}},
    "based": {"mixers": "linear,sliding_window", "linear": {"feature_map": "taylor", "feature_dim": 16},
              "sliding_window": {"window": 16}},
    "mamba + attention": {"mixers": "mamba,attention"},
}

_TRAIN = {"batch_size": 64, "lr": 3e-3, "warmup": 100, "weight_decay": 0.1, "target_metric": "accuracy",
          "target_accuracy": 0.99, "log_every": 100, "checkpoint_every": 1000}

BUDGETS = {
    "smoke": {
        "speed": {"task": {"vocab_size": 64, "input_seq_len": 32, "num_kv_pairs": 4},
                  "model": {"n_layers": 1, "d_model": 16, "n_heads": 1}},
        "default": None,
        "grid": {"task": {"vocab_size": 64, "input_seq_len": 32, "num_kv_pairs": 4}, "widths": [16], "n_layers": 1},
        "train": {**_TRAIN, "steps": 20, "batch_size": 16, "warmup": 2, "eval_every": 10, "eval_n": 32, "log_every": 10},
        "grid_steps": 10, "n_test": 64,
    },
    "cpu": {
        # Zoology's timing setting (vocabulary 256, length 64, 4 pairs, 2 layers of width 64)
        "speed": {"task": {"vocab_size": 256, "input_seq_len": 64, "num_kv_pairs": 4},
                  "model": {"n_layers": 2, "d_model": 64, "n_heads": 2}},
        "default": {"task": {}, "model": {"n_layers": 2, "d_model": 64, "n_heads": 2}},
        # 8 pairs in 64 tokens: Mamba-1's chunked scan costs 0.3 s a step at width 64 on one thread here,
        # so wider models and longer sequences are the gpu budget's
        "grid": {"task": {"vocab_size": 256, "input_seq_len": 64, "num_kv_pairs": 8}, "widths": [32, 64],
                 "n_layers": 2},
        "train": {**_TRAIN, "steps": 5000, "eval_every": 100, "eval_n": 512},
        "grid_steps": 1500, "n_test": 2000,
    },
    "gpu": {  # Zoology's sweep: lengths up to 512, 64 pairs, widths 64-512
        "speed": {"task": {"vocab_size": 256, "input_seq_len": 64, "num_kv_pairs": 4},
                  "model": {"n_layers": 2, "d_model": 64, "n_heads": 2}},
        "default": {"task": {}, "model": {"n_layers": 2, "d_model": 64, "n_heads": 2}},
        "grid": {"task": {"vocab_size": 8192, "input_seq_len": 512, "num_kv_pairs": 64}, "widths": [64, 128, 256, 512],
                 "n_layers": 2},
        "train": {**_TRAIN, "steps": 20000, "eval_every": 500, "eval_n": 1000, "batch_size": 256},
        "grid_steps": 20000, "n_test": 3000,
    },
}


# Every model gets a width-2 causal convolution on its embeddings (`model.canon`), as Zoology's benchmark
# gives every mixer a short convolution in its first layer: a token then carries the one before it, and a
# query finds its value in one attention step. Measured here (attention, 2 x 64, vocabulary 256): 99.7% of
# queries right after 500 steps with it; 22% after 2,800 steps without it, still on the plateau.
CANON = 2


def _config(task: dict[str, Any], model: dict[str, Any], train: dict[str, Any], seed: int):
    return make_config({"task": {"name": "mqar", **task}, "model": {"position": "rope", "canon": CANON, **model},
                                 "train": {**train, "seed": seed}})


def _timed(ctx: Context, label: str, part: dict[str, Any]) -> dict[str, Any]:
    """Train attention until 99% of test queries are right; its seconds and accuracy."""
    s = ctx.settings
    summary = train_run(ctx.run_dir(label), _config(part["task"], part["model"], s["train"], ctx.seed), quiet=ctx.quiet)
    ev = summary["final_eval"] or {}
    return {f"{label}.accuracy": ev.get("accuracy"), f"{label}.steps": summary["step"],
            f"{label}.seconds": round(summary["fit_seconds"], 1) if summary.get("fit_seconds") else None,
            f"{label}.train_seconds": round(summary["train_seconds"] or 0, 1),
            f"{label}.reached_target": summary["stopped_early"]}


def run(ctx: Context) -> Outcome:

    s = ctx.settings
    metrics: dict[str, Any] = {}
    runs: dict[str, str] = {}
    for label in ("speed", "default"):
        if s[label] is not None:
            metrics.update(_timed(ctx, label, s[label]))
            runs[label] = f"runs/{label}"
    grid, points = s["grid"], {}
    train = {**s["train"], "steps": s["grid_steps"]}
    L = grid["task"]["input_seq_len"]
    for family, extra in FAMILIES.items():
        for width in grid["widths"]:
            label = f"grid-{family.replace(' ', '').replace('(', '-').replace(')', '').replace('+', '-')}-{width}"
            model = {"n_layers": grid["n_layers"], "d_model": width, "n_heads": max(1, width // 32), **extra}
            summary = train_run(ctx.run_dir(label), _config(grid["task"], model, train, ctx.seed), quiet=ctx.quiet)
            acc = evaluate_tokens(ctx.run_dir(label), s["n_test"])["accuracy"]
            points.setdefault(family, []).append({"width": width, "state_size": summary["state_size"], "accuracy": acc,
                                                  "n_params": summary["n_params"], "steps": summary["step"]})
            metrics[f"grid.{family}.d{width}.accuracy"] = acc
            metrics[f"grid.{family}.d{width}.state_size"] = summary["state_size"]
            runs[label] = f"runs/{label}"
    accuracy_by_state_size(points, ctx.out / "plots" / "accuracy_by_state_size.png",
                           title=f"MQAR: {grid['task']['num_kv_pairs']} pairs in {L} tokens, "
                                 f"vocabulary {grid['task']['vocab_size']}")
    return Outcome(metrics=metrics, runs=runs, artifacts=["plots/accuracy_by_state_size.png"], extra={"grid": points})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    lines = [results_header(results, "Multi-query associative recall (Zoology)"), "## Attention until 99% of queries are right\n",
             "| setting | accuracy | steps | seconds (with evaluation) | training seconds |", "|---|---:|---:|---:|---:|"]
    for label in ("speed", "default"):
        if f"{label}.accuracy" in m:
            acc = m[f"{label}.accuracy"]
            lines.append(f"| {label} | {'—' if acc is None else f'{acc:.4f}'} | {m[f'{label}.steps']} | {m[f'{label}.seconds']} "
                         f"| {m[f'{label}.train_seconds']} |")
    lines += ["\n## Accuracy against state size\n", "| mixer | width | state size | parameters | accuracy |",
              "|---|---:|---:|---:|---:|"]
    for family, pts in results.get("grid", {}).items():
        for p in pts:
            lines.append(f"| {family} | {p['width']} | {p['state_size']:,} | {p['n_params']:,} | {p['accuracy']:.4f} |")
    lines.append("\n![accuracy by state size](plots/accuracy_by_state_size.png)\n")
    return "\n".join(lines)


register(Recipe(
    name="mqar",
    paper="Arora et al. 2023, Zoology: Measuring and Improving Recall in Efficient Language Models",
    description="multi-query associative recall: attention's time to 99%, and accuracy against state size per mixer",
    budgets=BUDGETS,
    claims=[
        Claim("2-layer attention (width 64, canon 2) reaches 99% on MQAR at the default setting", "Arora et al. 2023",
              metric="default.accuracy", threshold=0.99),
        Claim("... within 10 minutes on this CPU (seconds, evaluation included)", "seqlab issue 5",
              metric="default.seconds", threshold=600, direction="at_most", budgets=("cpu",)),
        Claim("2-layer attention (width 64, canon 2, vocabulary 256) reaches 99% in half the 155 s of Zoology's code here",
              "Zoology's code on this CPU: 155 s", metric="speed.seconds", threshold=77.5, paper_value=155.0,
              direction="at_most", budgets=("cpu",)),
        Claim("... and does reach 99% there", "Arora et al. 2023", metric="speed.accuracy", threshold=0.99),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 30.0},
))
