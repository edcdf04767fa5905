"""Plots: accuracy against length (training range shaded), label accuracy against round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def accuracy_by_length(curves: dict[str, dict[int, float]], path: Path, train_range: tuple[int, int] | None,
                       title: str = "", xlabel: str = "operand length", ordered: bool = False) -> Path:
    """One line per label: exact match (y) against length (x).

    `ordered` curves are a sequence (rounds): they are coloured light to dark along one colour map,
    so a dozen of them stay told apart, and the last is drawn thicker."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    if train_range is not None:
        lo, hi = train_range
        ax.axvspan(lo - 0.5, hi + 0.5, color="tab:green", alpha=0.12, label=f"trained ({lo}-{hi})")
    n = len(curves)
    for k, (label, curve) in enumerate(curves.items()):
        xs = sorted(curve)
        style = {}
        if ordered:
            style = {"color": plt.get_cmap("viridis_r")(0.15 + 0.85 * k / max(n - 1, 1)),
                     "linewidth": 2.5 if k == n - 1 else 1.2}
        ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=3, label=label, **style)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("exact match")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: curves stay visible
    return _save(fig, path)


def label_accuracy_by_round(curves: dict[str, list[float | None]], path: Path, title: str = "") -> Path:
    """One line per label: accuracy (y) of the labels made in round r (x, from 1); None is skipped."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    for label, values in curves.items():
        points = [(r, v) for r, v in enumerate(values, start=1) if v is not None]
        ax.plot([r for r, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("label accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write atomically: a reader never sees half a file."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def error_by_points(curves: dict[str, dict[str, list[float]]], path: Path, title: str = "",
                    ylabel: str = "squared error / scale", xlabel: str = "in-context examples k",
                    marks: dict[str, float] | None = None, log: bool = False, ymax: float | None = None) -> Path:
    """One line per model or baseline: mean error (y) against k (x), with its interval shaded.

    Each curve is {"k": [...], "mean": [...], "lo": [...], "hi": [...]}; `marks` draws labelled
    vertical lines (k = d, say); `ymax` cuts the axis (a baseline far worse than predicting 0 would
    otherwise flatten every other curve, as Garg et al.'s plots cut it too)."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=120)
    for label, c in curves.items():
        line, = ax.plot(c["k"], c["mean"], marker="o", markersize=2.5, label=label)
        if "lo" in c and "hi" in c:
            ax.fill_between(c["k"], c["lo"], c["hi"], color=line.get_color(), alpha=0.15, linewidth=0)
    for name, x in (marks or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.text(x, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=8, color="grey", va="top")
    if log:
        ax.set_yscale("log")
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def accuracy_by_state_size(points: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """One line per mixer family: accuracy (y) against the state it keeps per sequence (x, log scale),
    one point per width, as Zoology's Figure 2. Each point is {"state_size", "accuracy", "width"}."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=120)
    for label, pts in points.items():
        pts = sorted(pts, key=lambda p: p["state_size"])
        xs = [max(p["state_size"], 1) for p in pts]
        line, = ax.plot(xs, [p["accuracy"] for p in pts], marker="o", markersize=4, label=label)
        for x, p in zip(xs, pts):
            ax.annotate(f"d={p['width']}", (x, p["accuracy"]), textcoords="offset points", xytext=(3, -9), fontsize=6,
                        color=line.get_color())
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("state size (numbers kept per sequence)")
    ax.set_ylabel("MQAR accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def accuracy_by_step(curves: dict[str, dict[int, float]], path: Path, title: str = "", ylabel: str = "test accuracy") -> Path:
    """One line per model: periodic test accuracy (y) against training step (x)."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    for label, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def accuracy_heatmap(grid: dict[str, dict[str, float]], path: Path, xlabel: str, ylabel: str, title: str = "") -> Path:
    """A heatmap of accuracy: rows are grid's outer keys (y), columns its inner keys (x); missing cells blank."""
    import numpy as np

    rows = sorted(grid, key=int)
    cols = sorted({c for cells in grid.values() for c in cells}, key=int)
    values = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if c in grid[r]:
                values[i, j] = grid[r][c]
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.45 * len(cols)), 1.2 + 0.45 * len(rows)), dpi=120)
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="exact match")
    return _save(fig, path)


def accuracy_by_layer(curves: dict[str, dict[int, float]], path: Path, title: str = "",
                      reference: dict[str, float] | None = None) -> Path:
    """One line per task: accuracy (y) against the layer where a vector was injected (x); a dotted line of
    the same colour at each task's `reference` accuracy (with the demonstrations in context)."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    for label, curve in curves.items():
        xs = sorted(curve)
        line, = ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=4, label=label)
        if reference and label in reference:
            ax.axhline(reference[label], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("layer (block whose output is replaced)")
    ax.set_ylabel("zero-shot accuracy with the vector")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def probability_by_share(curves: dict[str, dict[float, float]], path: Path, title: str = "") -> Path:
    """One line per task of a mixture: the model's mean probability of that task's answer (y) against the
    share of the prompt's demonstrations that show the task (x), with the diagonal y = x."""
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="P = share")
    for label, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("share of demonstrations showing the task")
    ax.set_ylabel("P(that task's answer)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def mean_and_spread(curves: dict[str, list[tuple]], path: Path, xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """One line per label through the mean of each x, a band from lo to hi, and every run as a dot; each
    point is (x, mean, lo, hi, values). Numeric x on a numeric axis (logarithmic where the values span
    more than a decade, as learning rates do), anything else as categories in the order given."""
    xs = [p[0] for pts in curves.values() for p in pts]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    cats = list(dict.fromkeys(map(str, xs)))
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=120)
    for label, pts in curves.items():
        pts = sorted(pts, key=lambda p: p[0]) if numeric else pts
        pos = [p[0] if numeric else cats.index(str(p[0])) for p in pts]
        line, = ax.plot(pos, [p[1] for p in pts], marker="o", markersize=4, label=label)
        ax.fill_between(pos, [p[2] for p in pts], [p[3] for p in pts], color=line.get_color(), alpha=0.18, linewidth=0)
        for x, p in zip(pos, pts):
            ax.scatter([x] * len(p[4]), p[4], color=line.get_color(), s=8, alpha=0.5, zorder=3)
    if numeric and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    if numeric and len(set(xs)) <= 12:  # a sweep's few values, each marked
        ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
        ax.minorticks_off()
    if not numeric:
        ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 8 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if len(curves) > 1:  # one curve is named by the axis
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def loss_by_step(steps: list[int], losses: list[float], title: str = "") -> bytes:
    """Training loss (y; logarithmic where it spans more than a decade) against step (x), as PNG bytes: for
    a report to embed where the run drew no loss plot of its own, so nothing is written to the run."""
    import io

    fig, ax = plt.subplots(figsize=(8.5, 3.6), dpi=110)
    ax.plot(steps, losses, marker="o" if len(steps) <= 40 else None, markersize=3)
    positive = [v for v in losses if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def inertia_by_k(curves: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """An elbow plot: one line per layer, k-means inertia for k = 1, 2, ... (x) as a share of the inertia of
    one cluster (y), so layers of different scales share an axis."""
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    for label, inertia in curves.items():
        top = inertia[0] if inertia and inertia[0] > 0 else 1.0
        ax.plot(range(1, len(inertia) + 1), [v / top for v in inertia], marker="o", markersize=3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("clusters k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("inertia / inertia at k = 1")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def bars_by_layer(values: dict[str, list[float]], path: Path, ylabel: str, title: str = "",
                  line: float | None = None, line_label: str = "") -> Path:
    """Grouped bars: for each layer (x), one bar per series (NaN drawn as no bar); `line` a dashed level."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    n_layers = max((len(v) for v in values.values()), default=0)
    width = 0.8 / max(len(values), 1)
    for s, (label, ys) in enumerate(values.items()):
        xs = np.arange(len(ys)) + (s - (len(values) - 1) / 2) * width
        ax.bar(xs, [0.0 if np.isnan(y) else y for y in ys], width=width, label=label)
    if line is not None:
        ax.axhline(line, color="grey", linestyle="--", linewidth=1, label=line_label or None)
    ax.set_xticks(range(n_layers))
    ax.set_xlabel("attention layer")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def accuracy_by_cache_share(panels: dict[str, dict[str, list[tuple[float, float]]]], path: Path, title: str = "") -> Path:
    """One panel per task: one line per method through its (share of the full K cache kept, accuracy) points."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.8, 4), dpi=120, squeeze=False)
    for ax, (task, curves) in zip(axes[0], panels.items()):
        for label, pts in curves.items():
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=5 if len(pts) == 1 else 3,
                    linestyle="-" if len(pts) > 1 else "none", label=label)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("K cache kept (share of the full cache)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.set_title(task, fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
