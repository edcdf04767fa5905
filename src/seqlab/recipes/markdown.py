"""Markdown pieces of a recipe's report.md: the header with its command and claims, tables by length."""

from __future__ import annotations

from typing import Any


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
    """The `seqlab reproduce` command line that wrote a recipe's results.json (a list option as the comma
    list it was given as, whether it comes as a tuple from the parser or a list from results.json)."""
    options = "".join(f" --{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                      for k, v in sorted(results.get("options", {}).items()) if v is not None)  # unset: the default
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


def longest_at(curve: dict[int, float], level: float) -> int:
    """The longest length L such that every length up to L reaches `level` (0 if length 1 fails)."""
    best = 0
    for L in sorted(curve):
        if curve[L] < level:
            break
        best = L
    return best
