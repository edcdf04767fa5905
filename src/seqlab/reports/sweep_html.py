"""report.html of a sweep directory: every run's status and final metrics, the sweep's spec, what failed.
Built with the page pieces of `seqlab.reports.html`."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from seqlab.core.errors import BadInput
from seqlab.core.io import read_json
from seqlab.reports.html import (_read, details, image_figures, image_files, meta_line, note, page, pretty_json,
                                 report_link, section, table)


def load_sweep_dir(path: Path):
    """The Sweep a sweep directory's sweep.json describes (its file is not run again)."""
    from seqlab.runs import get_kind, resolve
    from seqlab.sweeps.sweep import Sweep, SweepRun

    meta = _read(path / "sweep.json", "a sweep's sweep.json")
    problem = sweep_json_problem(meta)
    if problem:
        raise BadInput(f"{path}/sweep.json is not a sweep's sweep.json ({problem})")
    try:
        runs = [SweepRun(i, r["label"], r["kind"], resolve(get_kind(r["kind"]), r["config"]), path / "runs" / r["label"])
                for i, r in enumerate(meta["runs"])]
        return Sweep(Path(meta["file"]), meta["name"], path, runs, list(meta["varying"])), meta
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        missing = f" (no {e})" if isinstance(e, KeyError) else ""
        raise BadInput(f"{path}/sweep.json is not a sweep's sweep.json{missing}") from None
    except BadInput as e:
        raise BadInput(f"{path}/sweep.json: {e}") from None


def sweep_json_problem(meta: Any) -> str | None:
    """The first thing that makes `meta` not the sweep.json `seqlab sweep` writes; None where it is one. A
    label must name a folder under runs/ (as a sweep file's label() must), once."""
    from seqlab.sweeps.sweep import LABEL_OK

    if not isinstance(meta, dict):
        return f"it holds a {type(meta).__name__}, not a mapping"
    for k, t in (("name", str), ("file", str), ("varying", list), ("runs", list)):
        if k not in meta:
            return f"no '{k}'"
        if not isinstance(meta[k], t):
            return f"'{k}' is not a {t.__name__}"
    if "\0" in meta["file"]:
        return "'file' is not a path"
    if not all(isinstance(k, str) for k in meta["varying"]):
        return "'varying' is not a list of config keys"
    seen = set()
    for i, r in enumerate(meta["runs"]):
        if not isinstance(r, dict) or not {"label", "kind", "config"} <= set(r):
            return f"run {i + 1} is not a mapping of label, kind and config"
        lab = r["label"]
        if not isinstance(lab, str) or not LABEL_OK.fullmatch(lab) or lab.startswith("."):
            return f"run {i + 1}'s label {lab!r} is not a folder name"
        if lab in seen:
            return f"the label {lab!r} twice"
        seen.add(lab)
        if not isinstance(r["kind"], str) or not isinstance(r["config"], dict):
            return f"run {i + 1}'s kind or config is malformed"
    return None


def run_statuses(sweep) -> dict[str, str]:
    from seqlab.sweeps.sweep import run_state
    from seqlab.sweeps.summary import STATUS

    try:
        failures = read_json(sweep.out / "failures.json")
    except (OSError, ValueError):
        failures = []
    failed = {f.get("label") for f in failures if isinstance(f, dict) and isinstance(f.get("label"), str)} \
        if isinstance(failures, list) else set()
    return {r.label: "failed" if r.label in failed else STATUS[run_state(r)] for r in sweep.runs}


def sweep_html(path: Path) -> str:
    """The summary over seeds and its plot (sweeps_summary.summarize, which also writes summary.csv and
    plots/<metric>.png, as `seqlab sweep --summary` does), and every run with its status."""
    from seqlab.sweeps.sweep import short_names
    from seqlab.sweeps.summary import summarize

    sweep, meta = load_sweep_dir(path)
    why = ""
    try:
        summary = summarize(sweep)
    except BadInput as e:  # no run has logged anything yet: the report lists the runs alone
        summary, why = None, str(e)
    statuses = run_statuses(sweep)
    names = short_names(sweep.varying)
    sections = []
    if summary:
        keys = [k for k in (summary["by"], *summary["series_keys"]) if k]
        rows = [[g["x"] if k == summary["by"] else g["series"][k] for k in keys]
                + [g["n"], g["mean"], g["std"], g["min"], g["max"]] for g in summary["groups"]]
        over = "over seeds" if summary["seeds_vary"] else "one run each: seeds do not vary"
        sections.append(section(f"Summary: {summary['metric']} ({over})",
                                table([*[names.get(k, k) for k in keys], "runs", "mean", "std", "min", "max"], rows)))
    else:
        sections.append(section("Summary", note(why)))
    metric = summary["metric"] if summary else None
    by_label = {r["label"]: r for r in summary["rows"]} if summary else {}
    rows = []
    for r in sweep.runs:
        flat, row = r.flat, by_label.get(r.label, {})
        rows.append([report_link(path, f"runs/{r.label}", r.label), statuses[r.label], *[flat.get(k) for k in sweep.varying],
                     *([row.get(metric)] if metric else []), row.get("step")])
    header = ["run", "status", *[names[k] for k in sweep.varying], *([metric] if metric else []), "step"]
    sections.append(section(f"Runs ({len(sweep.runs)})", table(header, rows)))
    sections.append(section("Plots", image_figures(path, image_files(path, exclude=("runs",))) or note("No plots.")))
    sections.append(section("Config", f"<p>Keys that vary: {escape(', '.join(sweep.varying) or 'none')}</p>\n"
                            + details("every run's config (sweep.json)", pretty_json(meta.get("runs")))))
    line = meta_line([f"{len(sweep.runs)} runs", f"seqlab {meta.get('seqlab_version', '?')}",
                      f"commit {str(meta['git_commit'])[:10]}" if meta.get("git_commit") else ""],
                     command=f"seqlab sweep {sweep.file}")
    return page(f"Sweep {sweep.name}", line, sections)
