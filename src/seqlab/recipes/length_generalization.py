"""Length generalization of reverse addition under each position scheme.

The same model is trained on operands of 1-10 digits with NoPE, learned absolute positions, RoPE,
abacus ids (McLeish et al. 2024) and coupled ids (Cho et al. 2024) read two ways: as a learned
embedding of each id (Cho's main method) and as a learned attention bias on the difference of ids
(their relative variant), then with index hints (Zhou et al. 2024) on top of whichever of NoPE,
learned and RoPE generalized best (hints need standard position ids). Each model is evaluated at
every length up to 50 digits.

Every scheme trains the same model for the same number of steps. The last scheme adds one thing to
relative coupling: scalable softmax (attention logits times s * log of the number of keys, Nakanishi
2025), so that a 10-digit problem and a 50-digit one differ for its attention only in how many keys
it sees, and no more than that decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqlab.eval.plots import accuracy_by_length
from seqlab.recipes.addition import TRAIN_LENGTHS, reverse_addition_config
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.markdown import length_table, longest_at, results_header
from seqlab.runs import evaluate_by_length, train as train_run


@dataclass(frozen=True)
class Scheme:
    label: str  # the name in tables and plots
    run: str  # its run directory, under runs/
    position: str  # model.position
    model: dict[str, Any] = field(default_factory=dict)  # model settings beyond the shared ones


# Relative coupling goes with scalable softmax: the bias table makes every id difference a trained
# one, and the log-length scale keeps the matching keys winning as the number of other keys grows
# (without it, 30-digit problems are right about 90% of the time and 50-digit ones never).
SCHEMES = (
    Scheme("NoPE", "NoPE", "none"),
    Scheme("learned", "learned", "learned"),
    Scheme("RoPE", "RoPE", "rope"),
    Scheme("abacus", "abacus", "abacus"),
    Scheme("coupling", "coupling", "coupling"),
    Scheme("relative coupling + SSMax", "coupling-relative", "coupling_relative", {"log_length_scale": True}),
)
HINT_BASES = ("NoPE", "learned", "RoPE")  # index hints need standard position ids


def _train_and_eval(ctx: Context, scheme: Scheme, hints: bool = False) -> dict[int, float]:
    s = ctx.settings
    run_dir = ctx.run_dir(scheme.run)
    settings = {**s, "model": {**s["model"], **scheme.model}}
    train_run(run_dir, reverse_addition_config(scheme.position, settings, ctx.seed, index_hints=hints), quiet=ctx.quiet)
    ev = evaluate_by_length(run_dir, s["lengths"], s["n_per_length"])
    return {int(k): v for k, v in ev["exact_match_by_length"].items()}


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    curves: dict[str, dict[int, float]] = {}
    runs: dict[str, str] = {}
    for scheme in SCHEMES:
        curves[scheme.label] = _train_and_eval(ctx, scheme)
        runs[scheme.label] = f"runs/{scheme.run}"
    beyond = [L for L in s["lengths"] if L > TRAIN_LENGTHS[1]]
    inside = [L for L in s["lengths"] if L <= TRAIN_LENGTHS[1]]
    mean_beyond = {k: sum(c[L] for L in beyond) / len(beyond) for k, c in curves.items()}
    mean_inside = {k: sum(c[L] for L in inside) / len(inside) for k, c in curves.items()}
    # Hints go with the scheme that does best beyond the training range, or else inside it.
    by_label = {sc.label: sc for sc in SCHEMES}
    hint_base = max(HINT_BASES, key=lambda k: (mean_beyond[k], mean_inside[k]))
    hint_label = f"index hints + {hint_base}"
    curves[hint_label] = _train_and_eval(ctx, Scheme(hint_label, "index-hints", by_label[hint_base].position), hints=True)
    runs[hint_label] = "runs/index-hints"
    mean_beyond[hint_label] = sum(curves[hint_label][L] for L in beyond) / len(beyond)
    mean_inside[hint_label] = sum(curves[hint_label][L] for L in inside) / len(inside)

    longest = {k: longest_at(c, 0.95) for k, c in curves.items()}
    best = max(curves, key=lambda k: (longest[k], mean_beyond[k]))
    top = max(s["lengths"])
    accuracy_by_length(curves, ctx.out / "plots" / "accuracy_by_length.png", TRAIN_LENGTHS,
                       title="reverse addition: length generalization by position scheme", xlabel="operand digits")
    metrics: dict[str, Any] = {
        "learned.mean_exact_match_beyond_train": mean_beyond["learned"],
        "learned.mean_exact_match_in_train": mean_inside["learned"],
        "best_scheme": best,
        "best.exact_match@20": curves[best].get(20),
        f"best.exact_match@{top}": curves[best].get(top),
        "best.longest_length_at_95": longest[best],
        "hint_base": hint_base,
        **{f"longest_length_at_95.{k}": v for k, v in longest.items()},
        **{f"mean_exact_match_beyond_train.{k}": v for k, v in mean_beyond.items()},
        **{f"mean_exact_match_in_train.{k}": v for k, v in mean_inside.items()},
    }
    extra = {"curves": {k: {str(L): v for L, v in c.items()} for k, c in curves.items()}}
    return Outcome(metrics=metrics, runs=runs, artifacts=["plots/accuracy_by_length.png"], extra=extra)


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    curves = {k: {int(L): v for L, v in c.items()} for k, c in results["curves"].items()}
    lengths = sorted(next(iter(curves.values())))
    lines = [results_header(results, "Length generalization of reverse addition"),
             "Each scheme trains the same decoder on reverse addition with operands of 1-10 digits "
             f"({ctx.settings['train']['steps']} steps at most), then is tested at every length up to {max(lengths)} "
             f"digits ({ctx.settings['n_per_length']} problems per length). Index hints go with "
             f"{m['hint_base']}, the best of the schemes that use standard position ids. "
             "*coupling* reads coupled ids (digits of equal significance share an id) through a learned "
             "embedding per id, as Cho et al. 2024 do; *relative coupling + SSMax* reads the same ids through "
             "a learned attention bias on the difference of the query's and the key's id, clipped to ±3, so "
             "that no id difference met at 50 digits is new, and scales attention logits by s * log(number "
             "of keys) (scalable softmax, Nakanishi 2025) so that the matching keys still win among many "
             "more others.\n\n",
             "## What each scheme reached\n\n| scheme | longest length with every length ≥ 95% | mean exact match at 1-10 digits "
             "| mean exact match beyond 10 digits |\n|---|---:|---:|---:|\n"]
    for k in curves:
        lines.append(f"| {k} | {m[f'longest_length_at_95.{k}']} | {m[f'mean_exact_match_in_train.{k}']:.3f} "
                     f"| {m[f'mean_exact_match_beyond_train.{k}']:.3f} |\n")
    lines.append("\nA scheme that has not learned the training range within the budget says nothing about length "
                 "generalization; the first claim is read together with the second.\n")
    lines.append(f"\nBest: **{m['best_scheme']}**.\n\n![accuracy by length](plots/accuracy_by_length.png)\n\n")
    lines.append("## Exact match by length\n\n" + length_table(curves, lengths))
    return "".join(lines)


_MODEL = {"n_layers": 1, "d_model": 128, "n_heads": 4}  # the quickstart's size
BUDGETS = {
    "smoke": {
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "train": {"steps": 10, "batch_size": 16, "eval_every": 10, "eval_n": 8, "log_every": 10, "lr": 3e-3, "warmup": 2},
        "max_offset": 20, "n_per_length": 4, "lengths": [1, 10, 12, 20],
    },
    "cpu": {
        "model": _MODEL,
        # No early stop: attention keeps sharpening after 10-digit problems come out right, and that
        # is what carries it to longer ones.
        "train": {"steps": 1500, "batch_size": 128, "lr": 2e-3, "warmup": 50, "eval_every": 250, "eval_n": 200,
                  "eval_length": 10, "log_every": 50, "checkpoint_every": 500},
        "max_offset": 60, "n_per_length": 50, "lengths": list(range(1, 51)),
    },
    "gpu": {
        "model": {"n_layers": 6, "d_model": 384, "n_heads": 6},
        "train": {"steps": 20000, "batch_size": 256, "lr": 5e-4, "warmup": 500, "eval_every": 1000, "eval_n": 500,
                  "eval_length": 10, "log_every": 100, "checkpoint_every": 1000},
        "max_offset": 100, "n_per_length": 1000, "lengths": list(range(1, 101)),
    },
}

register(Recipe(
    name="length-generalization",
    paper="Lee 2023; McLeish 2024 (abacus); Cho 2024 (coupling); Zhou 2024 (index hints); Kazemnejad 2023 (NoPE)",
    description="reverse addition trained on 1-10 digits under six position schemes, tested up to 50 digits",
    budgets=BUDGETS,
    claims=[
        Claim("learned absolute positions learn the training range (mean exact match at 1-10 digits)",
              "Lee et al. 2023", metric="learned.mean_exact_match_in_train", threshold=0.9),
        Claim("learned absolute positions fail beyond the training length (mean exact match at 11-50 digits)",
              "Lee et al. 2023", metric="learned.mean_exact_match_beyond_train", threshold=0.05, direction="at_most"),
        Claim("the best scheme holds ≥ 95% exact match at 20 digits", "McLeish 2024; Cho 2024",
              metric="best.exact_match@20", threshold=0.95),
        Claim("goal: the best scheme holds ≥ 95% exact match at 50 digits", "seqlab target",
              metric="best.exact_match@50", threshold=0.95, budgets=("cpu",)),
        Claim("the whole recipe finishes within 20 minutes on a 2-core CPU", "seqlab target",
              metric="wall_seconds", threshold=1200.0, direction="at_most", budgets=("cpu",)),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 20.0},
))
