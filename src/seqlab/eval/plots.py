"""Plots of accuracy against length, with the training range shaded."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_by_length(curves: dict[str, dict[int, float]], path: Path, train_range: tuple[int, int] | None,
                       title: str = "", xlabel: str = "operand length") -> Path:
    """One line per label: exact match (y) against length (x)."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    if train_range is not None:
        lo, hi = train_range
        ax.axvspan(lo - 0.5, hi + 0.5, color="tab:green", alpha=0.12, label=f"trained ({lo}-{hi})")
    for label, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("exact match")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves stay visible
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
