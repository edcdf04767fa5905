"""The KV-cache study's figures: accuracy against stored bytes, reconstruction error per layer."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from seqlab.eval.plots import _save, plt  # the Agg backend and the atomic write, as every other figure


def accuracy_by_kv_share(rows: list[dict], path: Path, title: str = "", full_accuracy: float | None = None) -> Path:
    """One series per method (Lexico per dictionary): accuracy (y) against KV bytes as % of the full cache (x)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["method"] == "full":
            continue
        name = f"lexico ({r['dictionary']})" if r["method"] == "lexico" else r["method"]
        series[name].append((100 * r["kv_share"], r["accuracy"]))
    fig, ax = plt.subplots(figsize=(8.5, 4.4), dpi=120)
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=name,
                linestyle="-" if len(pts) > 1 else "none")
    if full_accuracy is not None:
        ax.axhline(full_accuracy, color="black", linewidth=0.8, linestyle="--", label="full cache")
        ax.axhline(0.9 * full_accuracy, color="grey", linewidth=0.6, linestyle=":", label="90% of full")
    ax.axvline(25, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("KV bytes per sequence (% of the 16-bit full cache)")
    ax.set_ylabel("accuracy at the scored positions")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def error_by_layer(errors: dict[str, dict[str, list[float]]], path: Path, title: str = "") -> Path:
    """Grouped bars: relative reconstruction error per layer, one bar per (distribution, keys or values)."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    labels = [(d, part) for d in errors for part in ("keys", "values")]
    n_layers = len(next(iter(errors.values()))["keys"])
    width = 0.8 / len(labels)
    for i, (d, part) in enumerate(labels):
        xs = [j + i * width for j in range(n_layers)]
        ax.bar(xs, errors[d][part], width=width, label=f"{d}: {part}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(n_layers)], [f"layer {j}" for j in range(n_layers)])
    ax.set_ylabel("relative error ||x - x̂|| / ||x||")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
