"""The quickstart: reverse addition of 1-10 digit numbers (Lee et al. 2023), learned on a CPU in minutes.

The model reads zero-padded operands and position ids coupled by significance (Cho et al. 2024),
which makes the digit alignment that addition needs a lookup of "the same id": on a 2-core CPU a
one-layer model passes 99% exact match on 10-digit problems within a few hundred steps.
"""

from __future__ import annotations

from typing import Any

from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import length_table, results_header
from seqlab.runs import evaluate_by_length, load, make_config, train as train_run
from seqlab.eval.plots import accuracy_by_length

TRAIN_LENGTHS = (1, 10)

# Position scheme -> format settings. Every scheme reads zero-padded operands (as Cho et al. 2024 do):
# with coupled ids a 1-layer model then learns 10-digit addition in about 300 steps instead of
# over 1,500, because every digit finds a partner of equal significance.
SCHEME_FORMATS: dict[str, dict[str, Any]] = {
    "none": {"zero_pad": True},
    "learned": {"zero_pad": True},
    "rope": {"zero_pad": True},
    "alibi": {"zero_pad": True},
    "abacus": {"zero_pad": True, "reverse_operands": True},  # McLeish et al. 2024: operands least significant first
    "coupling": {"zero_pad": True},
    "coupling_relative": {"zero_pad": True},
}


def reverse_addition_config(position: str, s: dict[str, Any], seed: int, index_hints: bool = False):
    """A RunConfig for reverse addition on operands of 1-10 digits under one position scheme."""
    fmt = {"reverse_output": True, **SCHEME_FORMATS[position]}
    if position in ("abacus", "coupling", "coupling_relative") or index_hints:
        fmt["max_offset"] = s["max_offset"]
    if index_hints:
        fmt["index_hints"] = True
    base = {
        "task": {"name": "addition", "min_len": TRAIN_LENGTHS[0], "max_len": TRAIN_LENGTHS[1]},
        "format": fmt,
        "model": {**s["model"], "position": position},
        "train": {**s["train"], "seed": seed},
    }
    return make_config(base)


BUDGETS = {
    "smoke": {
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "train": {"steps": 20, "batch_size": 32, "eval_every": 10, "eval_n": 16, "log_every": 10, "lr": 3e-3, "warmup": 5},
        "max_offset": 20, "n_at_10": 20, "n_per_length": 10, "lengths": [1, 5, 10, 12],
    },
    "cpu": {
        # One layer learns this faster than two on a CPU: coupled ids leave attention one lookup to do.
        "model": {"n_layers": 1, "d_model": 128, "n_heads": 4},
        "train": {"steps": 1000, "batch_size": 128, "lr": 2e-3, "warmup": 50, "eval_every": 100, "eval_n": 400,
                  "target_accuracy": 0.995, "log_every": 50, "checkpoint_every": 250},
        "max_offset": 20, "n_at_10": 1000, "n_per_length": 200, "lengths": list(range(1, 13)),
    },
    "gpu": {
        "model": {"n_layers": 4, "d_model": 256, "n_heads": 8},
        "train": {"steps": 5000, "batch_size": 256, "lr": 1e-3, "warmup": 200, "eval_every": 250, "eval_n": 500,
                  "eval_length": 10, "target_accuracy": 0.999, "log_every": 50, "checkpoint_every": 500},
        "max_offset": 20, "n_at_10": 1000, "n_per_length": 1000, "lengths": list(range(1, 13)),
    },
}


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    run_dir = ctx.run_dir("reverse-addition")
    summary = train_run(run_dir, reverse_addition_config("coupling", s, ctx.seed), quiet=ctx.quiet)
    trained = load(run_dir)  # one load for both evaluations; the run's plot is of the lengths table
    at10 = evaluate_by_length(trained, [10], s["n_at_10"], label="at_10", plot=False)
    table = evaluate_by_length(trained, s["lengths"], s["n_per_length"])
    curve = {int(k): v for k, v in table["exact_match_by_length"].items()}
    accuracy_by_length({"coupling": curve}, ctx.out / "plots" / "accuracy_by_length.png", TRAIN_LENGTHS,
                       title="reverse addition: exact match by operand length")
    metrics = {"exact_match@10": at10["exact_match_by_length"]["10"], "n@10": s["n_at_10"],
               "train_steps": summary["step"], "train_seconds": round(summary["train_seconds"] or 0.0, 1),
               "n_params": summary["n_params"],
               **{f"exact_match_by_length.{k}": v for k, v in table["exact_match_by_length"].items()}}
    if not ctx.quiet:
        from seqlab.core.console import console
        from rich.table import Table

        t = Table(title=f"reverse addition: exact match by length (n={s['n_per_length']}; trained on 1-10 digits)")
        t.add_column("digits", justify="right")
        t.add_column("exact match", justify="right")
        for L, v in curve.items():
            t.add_row(str(L), f"{v:.3f}")
        console(stderr=True).print(t)
    return Outcome(metrics=metrics, runs={"reverse-addition": "runs/reverse-addition"},
                   artifacts=["plots/accuracy_by_length.png"], extra={"lengths": s["lengths"]})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    curve = {int(k.split(".")[1]): v for k, v in m.items() if k.startswith("exact_match_by_length.")}
    return (results_header(results, "Reverse addition (quickstart)")
            + "A one-layer decoder with coupled position ids (Cho et al. 2024) trained on reverse addition "
              "(answer written least significant digit first, Lee et al. 2023; operands zero-padded to equal "
              "width) with operands of 1-10 digits, stopped once 99.5% of 400 held-out problems (40 "
              "at each length from 1 to 10 digits) come out right.\n\n"
            + f"- exact match on {m['n@10']} held-out 10-digit problems: **{m['exact_match@10']:.4f}**\n"
            + f"- training: {m['train_steps']} steps in {m['train_seconds']} s; {m['n_params']:,} parameters\n\n"
            + "## Exact match by operand length\n\n" + length_table({"exact match": curve}, sorted(curve))
            + "\n![accuracy by length](plots/accuracy_by_length.png)\n")


register(Recipe(
    name="addition",
    paper="Lee et al. 2023, Teaching Arithmetic to Small Transformers",
    description="reverse addition of 1-10 digit numbers; exact match by length (the quickstart)",
    budgets=BUDGETS,
    claims=[
        Claim("reverse addition learned to 10 digits (1,000 held-out 10-digit problems)", "Lee et al. 2023",
              metric="exact_match@10", threshold=0.99),
        Claim("the whole command finishes within 5 minutes on a 2-core CPU", "seqlab target",
              metric="wall_seconds", threshold=300.0, direction="at_most", budgets=("cpu",)),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 2.0},
))
