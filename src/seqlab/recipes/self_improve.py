"""Self-improvement on length (Lee, Cai et al. 2025): three arms on one task, the same steps each.

- self: each round the models label the next length, the labels are filtered, training continues
  on the mix;
- control: the same rounds and steps with no new data (the starting range only);
- oracle: the same rounds with true answers for the new lengths (the upper bound).

The paper uses no position encoding (NoPE), under which the control does not generalize past its
training range. On a 2-core CPU a NoPE model does not learn 10-digit addition within the budget, so
reverse addition and copy run under abacus ids (McLeish 2024) and reverse under coupled ids (Cho
2024), each in a one-layer model whose control stops one or two lengths past its training range;
the report names the scheme. Each task's changes to a budget are data (`TASKS[task]["at"]`).
Multiplication follows the paper's schedule, one operand at a time: after n x n come 1 x (n+1) and
(n+1) x 1, then 2 x (n+1) and (n+1) x 2, ..., then (n+1) x (n+1); its self arm votes over 5 models.
"""

from __future__ import annotations

import argparse
from typing import Any

from seqlab.core.errors import BadInput
from seqlab.eval.plots import accuracy_by_length, label_accuracy_by_round
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register, task_settings
from seqlab.recipes.markdown import length_table, longest_at, results_header
from seqlab.self_improve.rounds import self_improve, train_models
from seqlab.runs import make_config
from seqlab.self_improve.config import SelfImproveConfig

# task option -> (task settings, format settings, filters). Starting ranges follow the paper.
TASKS: dict[str, dict[str, Any]] = {
    "reverse-addition": {"task": {"name": "addition", "min_len": 1, "max_len": 10}, "position": "abacus",
                         "format": {"reverse_output": True, "zero_pad": True, "reverse_operands": True, "max_offset": 20},
                         # three models that must agree: one model's labels are 94% right one digit out,
                         # and the errors compound (measured: 36% right by the third round)
                         "filters": {"n_models": 3, "vote_fraction": 1.0}, "target": 30},
    # forward addition: two layers under abacus ids learn 1-10 (95% after 1,500 steps) and write 11
    # digits 39% right, the errors in the top digits, where the length filter cannot see them: the
    # vote does the filtering
    "forward-addition": {"task": {"name": "addition", "min_len": 1, "max_len": 10}, "position": "abacus",
                         "format": {"reverse_output": False, "zero_pad": True, "max_offset": 20},
                         "filters": {"length_threshold": 2, "n_models": 3, "vote_fraction": 1.0}, "target": 30,
                         "at": {"cpu": {"model": {"n_layers": 2}, "train": {"steps": 1500}}}},
    # copy: the same scheme as reverse addition; the control copies 11 characters and stops
    # (measured: 0.18 at 12, 0.00 at 30)
    "copy": {"task": {"name": "copy", "min_len": 1, "max_len": 10}, "position": "abacus",
             "format": {"reverse_output": False, "max_offset": 20},
             "filters": {"n_models": 3, "vote_fraction": 1.0}, "target": 30},
    # reverse: coupled ids pair answer character j with input character j from the right (one layer
    # under abacus ids learns 56% of 1-10 in 1,000 steps); the control stops after 11 (0.00 at 12)
    "reverse": {"task": {"name": "reverse", "min_len": 1, "max_len": 10}, "position": "coupling",
                "format": {"reverse_output": False, "max_offset": 20},
                "filters": {"n_models": 3, "vote_fraction": 1.0}, "target": 30},
    # At cpu budget a shorter start (1-3 x 1-3) in a 2-layer RoPE model, which learns it (measured:
    # 100% in range after 1,500 steps; learned positions 96%, NoPE 39%); the vote claim needs round 1 only.
    "multiplication": {"task": {"name": "multiplication-steps", "min_len": 1, "max_len": 5}, "position": "rope",
                       "format": {"reverse_output": False}, "filters": {"n_models": 5, "vote_fraction": 0.7},
                       "at": {"cpu": {"start_top": 3, "model": {"n_layers": 2}, "train": {"steps": 1500},
                                      "self_improve": {"rounds": 2, "max_label_tokens": 160}}}},
    "maze": {"task": {"name": "maze", "min_len": 1, "max_len": 9, "n_nodes": 30}, "format": {"reverse_output": False},
             "filters": {"check_validity": True}},  # a path must follow the maze's edges
}
ARMS = {"self": "self", "control": "none", "oracle": "oracle"}

BUDGETS = {
    "smoke": {
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "warmup": 2, "eval_every": 20, "eval_n": 8,
                  "checkpoint_every": 10, "log_every": 10},
        "self_improve": {"rounds": 2, "n_per_length": 16, "steps_per_round": 10, "decay_steps": 5, "eval_n": 4,
                         "label_batch": 16, "max_label_tokens": 64},
        "start_top": 3,
    },
    "cpu": {
        "model": {"n_layers": 1, "d_model": 128, "n_heads": 4},
        "train": {"steps": 1000, "batch_size": 128, "lr": 2e-3, "warmup": 50, "schedule": "wsd",
                  "eval_every": 1000, "eval_n": 100, "checkpoint_every": 250, "log_every": 50},
        "self_improve": {"rounds": 12, "n_per_length": 1000, "steps_per_round": 150, "decay_steps": 75,
                         "eval_n": 50, "max_label_tokens": 128},
        "start_top": None,
    },
    "gpu": {
        "model": {"n_layers": 6, "d_model": 384, "n_heads": 6, "mlp": "swiglu", "norm": "rmsnorm"},
        "train": {"steps": 10000, "batch_size": 1024, "lr": 5e-4, "warmup": 1000, "schedule": "wsd", "decay_frac": 0.2,
                  "eval_every": 2000, "eval_n": 500, "checkpoint_every": 1000, "log_every": 100},
        "self_improve": {"rounds": 90, "n_per_length": 50000, "steps_per_round": 1000, "decay_steps": 500,
                         "eval_n": 200, "label_batch": 1024, "max_label_tokens": 256},
        "start_top": None,
    },
}


def _run_config(ctx: Context, spec: dict[str, Any], s: dict[str, Any]):
    task = dict(spec["task"])
    if s["start_top"] is not None:  # a shorter starting range than the paper's
        task["max_len"] = s["start_top"]
    position = spec.get("position", "none")
    return make_config({"task": task, "format": spec["format"], "model": {**s["model"], "position": position},
                           "train": {**s["train"], "seed": ctx.seed}})


def multiplication_schedule(start_top: int, rounds: int) -> list[list[list[int]]]:
    """The paper's sizes after a start of n x n: [1, n+1] and [n+1, 1], ..., then [n+1, n+1], and on."""
    out: list[list[list[int]]] = []
    n = start_top + 1
    while len(out) < rounds:
        out += [[[r, n], [n, r]] for r in range(1, n)] + [[[n, n]]]
        n += 1
    return out[:rounds]


def run(ctx: Context) -> Outcome:
    name = ctx.options.task
    spec = TASKS[name]
    settings = task_settings(ctx.settings, spec, ctx.budget)
    run_cfg = _run_config(ctx, spec, settings)
    per_arm: dict[str, list[dict[str, Any]]] = {}
    if ctx.options.rounds is not None:
        settings["self_improve"]["rounds"] = ctx.options.rounds
    rounds = settings["self_improve"]["rounds"]
    start_top = run_cfg.make_task().config.max_len
    schedule = multiplication_schedule(start_top, rounds) if name == "multiplication" else None
    if schedule is not None and ctx.options.lengths_per_round > 1:
        raise BadInput("multiplication follows the paper's size schedule: leave --lengths-per-round at 1")
    # Round 0 is the same in every arm: train it once, for as many models as the self arm votes with.
    round0 = ctx.run_dir("round-0")
    n_models = spec["filters"].get("n_models", 1)
    train_models([round0 / f"m{k}" for k in range(n_models)], run_cfg, ctx.options.workers, ctx.quiet)
    eval_lengths = None  # default: to 5 past the last round
    if schedule is None:
        top = start_top + rounds * ctx.options.lengths_per_round
        eval_lengths = list(range(1, max(top + 5, spec.get("target", 0)) + 1))
    for arm, labels in ARMS.items():
        filters = spec["filters"] if arm == "self" else {}
        si = SelfImproveConfig(**{**settings["self_improve"], **filters, "labels": labels, "schedule": schedule,
                                  "eval_lengths": eval_lengths, "workers": ctx.options.workers,
                                  "lengths_per_round": ctx.options.lengths_per_round})
        per_arm[arm] = self_improve(ctx.run_dir(arm), run_cfg, si, quiet=ctx.quiet, round0=round0)

    reached = max(max(t) for t in per_arm["self"][-1]["lengths"])
    final = {arm: {int(k): v for k, v in reps[-1]["exact_match_by_length"].items()} for arm, reps in per_arm.items()}
    curves = {f"after round {r['round']}": {int(k): v for k, v in r["exact_match_by_length"].items()}
              for r in per_arm["self"]}
    label_acc = {arm: [r["labels"]["label_accuracy"] for r in reps[1:]] for arm, reps in per_arm.items() if arm != "control"}
    label_acc["self (kept)"] = [r["labels"]["label_accuracy_kept"] for r in per_arm["self"][1:]]
    accuracy_by_length(curves, ctx.out / "plots" / "exact_match_by_round.png", (1, start_top),
                       title=f"self-improvement on {name}: exact match after each round", ordered=True)
    label_accuracy_by_round(label_acc, ctx.out / "plots" / "label_accuracy.png",
                            title=f"{name}: accuracy of the new round's labels")
    metrics: dict[str, Any] = {"task": name, "start_top": start_top, "last_round_length": reached,
                               "position": run_cfg.model.position}
    for arm, curve in final.items():
        for L in sorted({reached, spec.get("target", reached)}):
            metrics[f"{arm}.exact_match@{L}"] = curve.get(L)
        metrics[f"{arm}.longest_length_at_95"] = longest_at(curve, 0.95)
        at_90 = longest_at(curve, 0.90)
        metrics[f"{arm}.longest_length_at_90"] = at_90
        metrics[f"{arm}.beyond_start_at_90"] = max(0, at_90 - start_top)
    first = per_arm["self"][1]["labels"] if len(per_arm["self"]) > 1 else {}
    if "label_accuracy_single" in first:  # the vote against one model, on the first unseen size
        metrics["round1.label_accuracy_single"] = first["label_accuracy_single"]
        metrics["round1.label_accuracy_vote_kept"] = first["label_accuracy_kept"]
        metrics["round1.vote_kept_share"] = first["kept_share"]
        if first["label_accuracy_kept"] is not None:
            metrics["round1.vote_margin"] = first["label_accuracy_kept"] - first["label_accuracy_single"]
    extra = {"rounds": per_arm, "final": {arm: {str(k): v for k, v in c.items()} for arm, c in final.items()}}
    return Outcome(metrics=metrics, runs={arm: f"runs/{arm}/models/m0" for arm in ARMS},  # the model each arm evaluates
                   artifacts=["plots/exact_match_by_round.png", "plots/label_accuracy.png"], extra=extra)


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    lines = [results_header(results, f"Self-improvement on {m['task']}"),
             f"Trained on lengths 1-{m['start_top']} with true answers, then one round per new length up to "
             f"{m['last_round_length']}. Every arm uses the position scheme `{m.get('position', 'none')}` and the "
             "same steps; round 0 is shared.\n\n",
             "## Labels per round (self arm)\n\n"
             "| round | length | labelled | kept | model 0 alone: accuracy | label accuracy | kept labels' accuracy |\n"
             "|---:|---:|---:|---:|---:|---:|---:|\n"]
    for r in results["rounds"]["self"][1:]:
        lab = r["labels"]
        kept_acc = "—" if lab["label_accuracy_kept"] is None else f"{lab['label_accuracy_kept']:.3f}"
        single = f"{lab['label_accuracy_single']:.3f}" if "label_accuracy_single" in lab else "—"
        sizes = ",".join("x".join(map(str, t)) if len(set(t)) > 1 else str(t[0]) for t in r["lengths"])
        lines.append(f"| {r['round']} | {sizes} | {lab['n']} | {lab['kept']} | {single} "
                     f"| {lab['label_accuracy']:.3f} | {kept_acc} |\n")
    rounds = results["rounds"]["self"][1:]
    first_bad = next((r["round"] for r in rounds
                      if r["labels"]["label_accuracy_kept"] is not None and r["labels"]["label_accuracy_kept"] < 0.9), None)
    if not any(r["labels"]["kept"] for r in rounds):
        lines.append("\nNo round kept any label: the self arm trained on its starting range only.\n")
    elif first_bad:
        lines.append(f"\nErrors start to pile up (kept labels below 90% right) in round {first_bad}.\n")
    else:
        lines.append("\nKept labels stay at least 90% right in every round that kept any.\n")
    if rounds and "exact_match_at_round_sizes" in rounds[0]:
        arms = list(results["rounds"])
        lines.append("\n## Exact match at each round's sizes, after that round\n\n| round | size | "
                     + " | ".join(arms) + " |\n|---:|---:|" + "---:|" * len(arms) + "\n")
        for k, r in enumerate(rounds, start=1):
            for size in r["exact_match_at_round_sizes"]:
                accs = [results["rounds"][arm][k].get("exact_match_at_round_sizes", {}).get(size) for arm in arms]
                lines.append(f"| {k} | {size} | " + " | ".join("—" if a is None else f"{a:.3f}" for a in accs) + " |\n")
    finals = {arm: {int(k): v for k, v in c.items()} for arm, c in results["final"].items()}
    lines.append("\n![exact match by round](plots/exact_match_by_round.png)\n\n![label accuracy](plots/label_accuracy.png)\n\n")
    lines.append("## Exact match by length after the last round\n\n" + length_table(finals, sorted(next(iter(finals.values())))))
    return "".join(lines)


def _options(parser) -> None:
    parser.add_argument("--task", choices=sorted(TASKS), default="reverse-addition")
    parser.add_argument("--lengths-per-round", type=_positive, default=1,
                        help="new lengths each round labels: more than 1 is the paper's accelerated schedule")
    parser.add_argument("--rounds", type=_positive, default=None, help="rounds after round 0 (default: the budget's)")
    parser.add_argument("--workers", type=_positive, default=1,
                        help="processes that train and label the voting models side by side")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


register(Recipe(
    name="self-improve",
    paper="Lee, Cai et al. 2025, Self-Improving Transformers Overcome Easy-to-Hard and Length Generalization Challenges",
    description="models label their own longer problems, round after round, against a no-new-data control and oracle labels",
    budgets=BUDGETS,
    claims=[
        Claim("reverse addition: self-improvement from 1-10 digits reaches ≥ 95% exact match at 30 digits",
              "Lee, Cai et al. 2025", metric="self.exact_match@30", threshold=0.95, when=(("task", "reverse-addition"),)),
        Claim("reverse addition: the control with the same steps stays below 50% at 30 digits",
              "Lee, Cai et al. 2025", metric="control.exact_match@30", threshold=0.5, direction="at_most",
              when=(("task", "reverse-addition"),)),
        Claim("reverse addition: the whole recipe takes at most 45 minutes on a 2-core CPU", "seqlab target",
              metric="wall_seconds", threshold=2700.0, direction="at_most", budgets=("cpu",),
              when=(("task", "reverse-addition"),)),
        Claim("copy: self-improvement from 1-10 characters reaches ≥ 95% exact match at 30", "Lee, Cai et al. 2025",
              metric="self.exact_match@30", threshold=0.95, when=(("task", "copy"),)),
        Claim("copy: the control with the same steps stays below 50% at 30 characters", "Lee, Cai et al. 2025",
              metric="control.exact_match@30", threshold=0.5, direction="at_most", when=(("task", "copy"),)),
        Claim("reverse: self-improvement from 1-10 characters reaches ≥ 95% exact match at 30", "seqlab target",
              metric="self.exact_match@30", threshold=0.95, when=(("task", "reverse"),)),
        Claim("reverse: the control with the same steps stays below 50% at 30 characters", "seqlab target",
              metric="control.exact_match@30", threshold=0.5, direction="at_most", when=(("task", "reverse"),)),
        Claim("multiplication: on the first unseen size the vote's kept labels are ≥ 10 points more often right "
              "than one model's labels", "Lee, Cai et al. 2025 (31% to 93.3% on 5x6)",
              metric="round1.vote_margin", threshold=0.10, paper_value=0.623, when=(("task", "multiplication"),)),
        Claim("maze: path accuracy stays ≥ 90% at every hop count up to 3 past the starting range",
              "Lee, Cai et al. 2025", metric="self.beyond_start_at_90", threshold=3, when=(("task", "maze"),)),
    ],
    run=run,
    report=report,
    options=_options,
    minutes={"smoke": 1.0},
))
