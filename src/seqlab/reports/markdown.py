"""Markdown pieces shared by reports, and report.md for a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqlab.core.errors import BadInput
from seqlab.core.io import atomic_write_text, read_json, read_jsonl


def claims_table(results: dict[str, Any]) -> str:
    if not results.get("claims"):
        return "_This budget checks the wiring only; it makes no claims._\n"
    lines = ["| claim | source | paper | ours | threshold | holds |", "|---|---|---|---|---|---|"]
    for c in results["claims"]:
        paper = "—" if c["paper_value"] is None else f"{c['paper_value']:.3g}"
        ours = "—" if c["ours"] is None else f"{c['ours']:.4g}"
        sign = "≥" if c["direction"] == "at_least" else "≤"
        lines.append(f"| {c['name']} | {c['source']} | {paper} | {ours} | {sign} {c['threshold']:.4g} | "
                     f"{'yes' if c['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def reproduce_command(results: dict[str, Any]) -> str:
    """The `seqlab reproduce` command line that wrote a recipe's results.json."""
    options = "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(results.get("options", {}).items()))
    return f"seqlab reproduce {results['recipe']}{options} --budget {results['budget']} --seed {results['seed']}"


def results_header(results: dict[str, Any], title: str) -> str:
    return (f"# {title}\n\n"
            f"`{reproduce_command(results)}` · "
            f"device {results['device']} · seqlab {results['seqlab_version']} · {results['wall_seconds']:.0f} s\n\n"
            f"## Claims\n\n{claims_table(results)}\n")


def length_table(curves: dict[str, dict[int, float]], lengths: list[int]) -> str:
    """Markdown table: one row per length, one column per curve."""
    labels = list(curves)
    lines = ["| length | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    for L in lengths:
        cells = [f"{curves[k][L]:.3f}" if L in curves[k] else "—" for k in labels]
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_run_report(path: Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BadInput(f"{path} is not a run directory (no config.json)")
    config = read_json(path / "config.json")
    metrics = read_jsonl(path / "metrics.jsonl")
    parts = [f"# Run {path.name}\n", "## Config\n", "```json\n" + json.dumps(config, indent=2) + "\n```\n"]
    if metrics:
        last = metrics[-1]
        evals = [m for m in metrics if "eval_exact_match" in m]
        parts.append("## Training\n")
        parts.append(f"- steps: {last['step']}\n- last logged loss: {last.get('loss', float('nan')):.4f}\n")
        if evals:
            parts.append(f"- last periodic exact match: {evals[-1]['eval_exact_match']:.4f} (step {evals[-1]['step']})\n")
        errors = [m for m in metrics if "eval_error" in m]  # an in-context learning run
        if errors:
            last = errors[-1]
            parts.append(f"- last periodic error (mean over every prefix): {last['eval_error']:.4f} (step {last['step']})\n")
        accs = [m for m in metrics if "eval_accuracy" in m]  # a token-task run: accuracy at the scored positions
        if accs:
            last = accs[-1]
            parts.append(f"- last periodic accuracy (scored positions): {last['eval_accuracy']:.4f} (step {last['step']})\n")
    for ev in sorted((path / "eval").glob("*.json")):
        data = read_json(ev)
        if "exact_match_by_length" in data:
            curve = {int(k): v for k, v in data["exact_match_by_length"].items()}
            parts.append(f"\n## Evaluation: {ev.stem} (n={data['n']} per length)\n\n")
            parts.append(length_table({"exact match": curve}, sorted(curve)))
        elif "curves" in data:  # in-context learning: error against the number of examples k
            parts.append(f"\n## Evaluation: {ev.stem} (n={data['n']} prompts, d={data['n_dims']})\n\n")
            curves = {label: dict(zip(c["k"], c["mean"])) for label, c in data["curves"].items()}
            parts.append(length_table(curves, sorted(curves["model"])).replace("| length |", "| k |", 1))
        elif "accuracy" in data and "n_scored" in data:  # a token task
            parts.append(f"\n## Evaluation: {ev.stem} (n={data['n']} sequences, {data['n_scored']} scored positions)\n\n"
                         f"- accuracy: {data['accuracy']:.4f}\n- exact match (every scored position right): "
                         f"{data['exact_match']:.4f}\n")
    for png in sorted((path / "plots").glob("*.png")):
        parts.append(f"\n![{png.stem}](plots/{png.name})\n")
    out = path / "report.md"
    atomic_write_text(out, "".join(parts))
    return out


def longest_at(curve: dict[int, float], level: float) -> int:
    """The longest length L such that every length up to L reaches `level` (0 if length 1 fails)."""
    best = 0
    for L in sorted(curve):
        if curve[L] < level:
            break
        best = L
    return best
