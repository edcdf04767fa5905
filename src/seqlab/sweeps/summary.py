"""A sweep's summary: one row per run (the config keys that vary, the final metrics), summary.csv, a
table, and one plot of a metric against a config key, mean and spread over seeds.

A run's final metrics are its last periodic evaluation in metrics.jsonl (what `seqlab train` reports
at its end: exact_match for text tasks, accuracy for token tasks, error for in-context runs), its last
logged loss, step and training time, and the numbers at the top of any eval/*.json (`seqlab eval`
written after training) as `<file stem>.<key>`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from seqlab.core.errors import BadInput
from seqlab.core.io import atomic_write_text, read_json, read_jsonl
from seqlab.runs import get_kind
from seqlab.sweeps.sweep import SEED_KEY, Sweep, SweepRun, run_state, short_names

EVAL_SKIPS = {"n", "n_scored", "n_dims", "seed", "step"}  # bookkeeping, not results
STATUS = {"finished": "finished", "started": "unfinished", "new": "not started"}


def final_metrics(run_dir: Path) -> dict[str, Any]:
    records = read_jsonl(run_dir / "metrics.jsonl")
    out: dict[str, Any] = {}
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    if evals:
        out.update({k[5:]: v for k, v in evals[-1].items() if k.startswith("eval_") and k[5:] not in EVAL_SKIPS})
    losses = [r["loss"] for r in records if "loss" in r]
    if losses:
        out["loss"] = losses[-1]
    if records:
        out["step"] = records[-1].get("step")
        out["train_seconds"] = records[-1].get("train_seconds")
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.update({f"{path.stem}.{k}": v for k, v in data.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in EVAL_SKIPS})
    return out


def _status(run: SweepRun, failed: set[str]) -> str:
    return "failed" if run.label in failed else STATUS[run_state(run)]


def resolve_key(name: str, sweep: Sweep) -> str:
    """--by as a dotted config key, or the last part of exactly one (d_model for model.d_model)."""
    keys = list(dict.fromkeys(k for r in sweep.runs for k in r.flat))
    if name in keys:
        return name
    matches = [k for k in keys if k.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"it could be {', '.join(matches)}" if matches else f"keys that vary: {', '.join(sweep.varying) or 'none'}"
    raise BadInput(f"--by '{name}' is not a config key of this sweep ({hint})")


def summarize(sweep: Sweep, metric: str | None = None, by: str | None = None, spread: str = "minmax") -> dict[str, Any]:
    """Rows, columns and groups of the sweep's runs; writes summary.csv and plots/<metric>.png."""
    if spread not in ("minmax", "std"):
        raise BadInput(f"--spread must be minmax or std, not '{spread}'")
    if not (sweep.out / "sweep.json").is_file():
        raise BadInput(f"no sweep in {sweep.out} yet: run `seqlab sweep {sweep.file}` first")
    x_key = resolve_key(by, sweep) if by else next((k for k in sweep.varying if k != SEED_KEY), None)
    failed = {f["label"] for f in _read_failures(sweep.out)}
    rows, metric_names = [], []
    for run in sweep.runs:
        m = final_metrics(run.run_dir)
        metric_names += [k for k in m if k not in metric_names]
        flat = run.flat
        rows.append({"label": run.label, "status": _status(run, failed), **{k: flat.get(k) for k in sweep.varying},
                     **({x_key: flat.get(x_key)} if x_key else {}), **m})
    if not metric_names:
        raise BadInput(f"no run in {sweep.out} has logged anything yet: run `seqlab sweep {sweep.file}` first")
    kinds = [r.kind for r in sweep.runs]
    mains = [get_kind(k).main_metric for k in kinds]
    metric = metric or next((m for m in mains if m in metric_names), metric_names[0])
    if metric not in metric_names:
        raise BadInput(f"no run reports '{metric}' (metrics: {', '.join(metric_names)})")
    config_cols = list(dict.fromkeys([*sweep.varying, *([x_key] if x_key else [])]))
    columns = ["label", "status", *config_cols, metric, *[k for k in metric_names if k != metric]]
    csv_path = sweep.out / "summary.csv"
    atomic_write_text(csv_path, to_csv(rows, columns))
    series_keys = [k for k in sweep.varying if k not in (x_key, SEED_KEY)]
    groups = group(rows, metric, x_key, series_keys)
    plot = _plot(sweep, groups, metric, x_key, spread) if groups else None
    return {"rows": rows, "columns": columns, "config_columns": config_cols, "metric": metric, "by": x_key,
            "series_keys": series_keys, "groups": groups, "seeds_vary": SEED_KEY in sweep.varying,
            "csv": str(csv_path), "plot": None if plot is None else str(plot)}


def _read_failures(out: Path) -> list[dict[str, Any]]:
    try:
        data = read_json(out / "failures.json")
    except (OSError, ValueError):
        return []
    return [f for f in data if isinstance(f, dict) and isinstance(f.get("label"), str)] if isinstance(data, list) else []


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return json.dumps(v) if isinstance(v, (list, dict, bool)) else str(v)


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def group(rows: list[dict[str, Any]], metric: str, x_key: str | None, series_keys: list[str]) -> list[dict[str, Any]]:
    """Runs that differ only in their seed, pooled: n, mean, std (sample), min and max of `metric`, in
    the order the sweep lists them."""
    pooled: dict[tuple, list[float]] = {}
    for r in rows:
        v = r.get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            key = (json.dumps([r.get(k) for k in series_keys]), json.dumps(r.get(x_key) if x_key else None))
            pooled.setdefault(key, []).append(float(v))
    out = []
    for (series, x), vals in pooled.items():
        n, mean = len(vals), sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        out.append({"series": dict(zip(series_keys, json.loads(series))), "x": json.loads(x), "n": n, "mean": mean,
                    "std": std, "min": min(vals), "max": max(vals), "values": vals})
    return out


def _plot(sweep: Sweep, groups: list[dict[str, Any]], metric: str, x_key: str | None, spread: str) -> Path:
    from seqlab.eval.plots import mean_and_spread

    names = short_names(list(groups[0]["series"]))
    curves: dict[str, list[tuple]] = {}
    for g in groups:
        label = ", ".join(f"{names[k]}={v}" for k, v in g["series"].items()) or metric
        lo, hi = (g["min"], g["max"]) if spread == "minmax" else (g["mean"] - g["std"], g["mean"] + g["std"])
        curves.setdefault(label, []).append((g["x"] if x_key else "all runs", g["mean"], lo, hi, g["values"]))
    seeds = SEED_KEY in sweep.varying
    what = ("min-max" if spread == "minmax" else "± 1 std") + " over seeds" if seeds else "one run each"
    title = f"{sweep.name}: {metric} (mean, {what})" if seeds else f"{sweep.name}: {metric} ({what})"
    return mean_and_spread(curves, sweep.out / "plots" / f"{metric}.png", xlabel=x_key or "", ylabel=metric, title=title)


def tables(summary: dict[str, Any]):
    """A rich table of every run, and where seeds vary one of the seeds pooled."""
    from rich.table import Table

    metric, cfg = summary["metric"], summary["config_columns"]
    names = short_names(cfg)
    runs = Table(title=f"{len(summary['rows'])} runs ({summary['csv']})")
    for c in ["label", *[names[k] for k in cfg], metric, "step", "status"]:
        runs.add_column(c, justify="left" if c in ("label", "status") else "right")
    for r in summary["rows"]:
        runs.add_row(r["label"], *[_cell(r.get(k)) for k in cfg], _num(r.get(metric)), _cell(r.get("step")), r["status"])
    out = [runs]
    if summary["seeds_vary"]:
        keys = [k for k in (summary["by"], *summary["series_keys"]) if k]
        pooled = Table(title=f"{metric} over seeds")
        for c in [*[names.get(k, k) for k in keys], "seeds", "mean", "std", "min", "max"]:
            pooled.add_column(c, justify="right")
        for g in summary["groups"]:
            cells = [_cell(g["x"]) if k == summary["by"] else _cell(g["series"][k]) for k in keys]
            pooled.add_row(*cells, str(g["n"]), *(_num(g[s]) for s in ("mean", "std", "min", "max")))
        out.append(pooled)
    return out


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else _cell(v)
