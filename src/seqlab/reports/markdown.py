"""report.md for a run directory (a recipe's own report.md comes from its recipe: recipes/markdown.py).

What a malformed file (an eval/*.json of another shape, a metrics line without its step) would break is
left out, and the report says what it skipped; a config.json that is not a run's is refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqlab.core.errors import BadInput
from seqlab.core.io import atomic_write_text, read_json, read_jsonl
from seqlab.recipes.markdown import length_table

MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)  # what a file of another shape raises


def write_run_report(path: Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BadInput(f"{path} is not a run directory (no config.json)")
    try:
        config = read_json(path / "config.json")
    except (OSError, ValueError):
        raise BadInput(f"{path}/config.json is unreadable or not JSON") from None
    metrics = [m for m in read_jsonl(path / "metrics.jsonl") if isinstance(m, dict)]
    parts = [f"# Run {path.name}\n", "## Config\n", "```json\n" + json.dumps(config, indent=2) + "\n```\n"]
    skipped = []
    try:
        parts.append(_training(metrics))
    except MALFORMED as e:
        skipped.append(f"metrics.jsonl's summary ({_why(e)})")
    for ev in sorted((path / "eval").glob("*.json")):
        try:
            parts.append(_evaluation(ev, read_json(ev)))
        except (OSError, *MALFORMED) as e:
            skipped.append(f"eval/{ev.name} ({_why(e)})")
    for png in sorted((path / "plots").glob("*.png")):
        parts.append(f"\n![{png.stem}](plots/{png.name})\n")
    if skipped:
        parts.append("\n## Skipped\n\n" + "".join(f"- {s}: not in the shape seqlab writes\n" for s in skipped))
    out = path / "report.md"
    atomic_write_text(out, "".join(parts))
    return out


def _why(e: BaseException) -> str:
    return f"no {e}" if isinstance(e, KeyError) else type(e).__name__


def _training(metrics: list[dict]) -> str:
    parts = []
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
    return "".join(parts)


def _evaluation(ev: Path, data) -> str:
    parts = []
    if isinstance(data, dict):
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
    return "".join(parts)
