"""Plots and report.md of the ppd recipe (the report from results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqlab.eval.plots import error_by_points
from seqlab.recipes.markdown import results_header


def plot_all(folder: Path, tasks: dict) -> list[str]:
    out = []
    for t, r in tasks.items():
        layers = list(range(1, r["n_layers"] + 1))
        curves = {f"exit heads, top-{k}": {"k": layers, "mean": m} for k, m in r["offline_match"].items()}
        curves["logit lens, top-1"] = {"k": layers, "mean": r["logit_lens_match"]}
        error_by_points(curves, folder / f"match_{t}.png", title=f"{t}: exit's top-k holds the greedy token",
                        xlabel="block (the last is the model's own head)", ylabel="match rate (held-out, teacher-forced)")
        rows = r["ppd"]
        by_k: dict[str, dict] = {}
        for row in rows:
            c = by_k.setdefault(f"top-{row['top_k']}", {"k": [], "mean": []})
            c["k"].append(row["online_match"])
            c["mean"].append(row["saved"])
        error_by_points(by_k, folder / f"saved_{t}.png", title=f"{t}: PPD's saving against its match rate",
                        xlabel="match rate while decoding", ylabel="share of sequential layer-steps saved")
        out += [f"plots/match_{t}.png", f"plots/saved_{t}.png"]
    return out


def report(ctx, results: dict[str, Any]) -> str:
    m = results["metrics"]
    out = [results_header(results, "Predictive pipelined decoding, speculative and self-speculative decoding"),
           "Time is counted in layer-steps (one block for one token); sequential greedy decoding takes N per token. "
           "The prompt's prefill is left out of every count.\n"]
    for t, r in results.get("tasks", {}).items():
        out += [f"## {t} (exact match {r['exact_match']}, {r['n_layers']} blocks)\n",
                "| exit d | top-k | offline match | match while decoding | critical path | analytic | error | saved | "
                "extra compute | identical |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in r["ppd"]:
            out.append(f"| {row['exit_layer']} | {row['top_k']} | {row['offline_match']:.3f} | {row['online_match']:.3f} | "
                       f"{row['critical_path']} | {row['analytic']:.0f} | {row['analytic_error']:.1%} | {row['saved']:.1%} | "
                       f"{row['extra_compute']:+.1%} | {'yes' if row['identical'] else 'NO'} |")
        out += ["\n| speculative | acceptance | critical path | saved | wall s | wall speed-up vs greedy | identical |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for row in r["speculative"]:
            out.append(f"| {row['method']} | {row['acceptance']:.3f} | {row['critical_path']} | {row['saved']:.1%} | "
                       f"{row['wall_seconds']:.2f} | {row['wall_speedup']:.2f}x | {'yes' if row['identical'] else 'NO'} |")
        out.append(f"\n![match](plots/match_{t}.png)\n![saved](plots/saved_{t}.png)\n")
    out.append(f"Settings with a match rate >= 0.8: {m['match_at_least_0.8.configs']}; their least saving "
               f"{m['match_at_least_0.8.min_saved']}, their most extra compute {m['match_at_least_0.8.max_extra_compute']}. "
               f"The analytic model's mean error {m['analytic.mean_error']:.1%}, largest {m['analytic.max_error']:.1%}.\n")
    return "\n".join(out)
