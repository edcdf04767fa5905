"""report.html: one self-contained page for a run directory, a recipe's output folder or a sweep directory.

The page has no script and names no URL outside itself: its CSS is inline and every image is embedded
as a base64 data URI (SVGs too, as images, so their ids cannot clash and nothing in them can fetch), so
it opens offline and travels as one file. Every piece of text is escaped. `write_reports` also writes
report.md where `seqlab report` wrote one before (a run directory, a recipe's output folder).
"""

from __future__ import annotations

import base64
import json
import os
from html import escape
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from seqlab.core.errors import BadInput
from seqlab.core.io import atomic_write_text, read_json, read_jsonl
from seqlab.runs import stored_kind

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
SKIP_DIRS = {"checkpoints", "tensorboard", "wandb"}  # weights and trackers' own files, not plots
MAX_EVAL_ROWS = 100  # periodic evaluations shown in a run's table; a longer run shows every k-th and the last

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.3em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } code, pre { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
pre { background: #f4f4f4; padding: 10px 12px; overflow-x: auto; border-radius: 4px; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; margin: 0.6em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.yes { background: #dcf5dc; color: #145214; font-weight: 600; } td.no { background: #fbdcdc; color: #7a1010; font-weight: 600; }
figure { margin: 1.2em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; } .note { color: #666; font-style: italic; }
"""


class Raw(str):
    """HTML built here, already escaped: a table puts it in a cell as it is."""


# -- html pieces -------------------------------------------------------------------------------
def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v.is_integer() and abs(v) < 1e15:
            return f"{v:.0f}"
        return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def table(header: list[str], rows: Iterable[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, Raw):
            return v if v.startswith("<td") else f"<td>{v}</td>"
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<td class=\"num\">{escape(fmt(v))}</td>" if num else f"<td>{escape(fmt(v))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>\n" for r in rows)
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>\n"


def key_values(data: dict[str, Any]) -> str:
    return table(["name", "value"], [[k, v] for k, v in data.items()])


def pretty_json(data: Any) -> str:
    return f"<pre>{escape(json.dumps(data, indent=2, ensure_ascii=False, default=str))}</pre>\n"


def details(summary: str, inner: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>\n{inner}</details>\n"


def section(title: str, inner: str) -> str:
    return f"<section>\n<h2>{escape(title)}</h2>\n{inner}</section>\n"


def note(text: str) -> str:
    return f"<p class=\"note\">{escape(text)}</p>\n"


def link(href: str, text: str) -> Raw:
    return Raw(f"<a href=\"{escape(href)}\">{escape(text)}</a>")


def figure(data: bytes, mime: str, alt: str, caption: str) -> str:
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f"<figure><img src=\"{src}\" alt=\"{escape(alt)}\"><figcaption>{escape(caption)}</figcaption></figure>\n"


def page(title: str, meta: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"meta\">{meta}</p>\n{''.join(sections)}</main>\n</body>\n</html>\n")


def meta_line(parts: list[str], command: str | None = None) -> str:
    items = ([f"<code>{escape(command)}</code>"] if command else []) + [escape(p) for p in parts if p]
    return " · ".join(items)


# -- images ------------------------------------------------------------------------------------
def image_files(root: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Every PNG and SVG under `root`, top-level plots first; not in hidden folders, checkpoints or
    trackers' folders, nor in the top-level folders `exclude` names; not hidden (half-written) files."""
    found = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not (rel == Path(".") and d in exclude))
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_TYPES and not f.startswith(".")]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p.relative_to(root))))


def image_figures(root: Path, paths: list[Path]) -> str:
    out = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        out.append(figure(data, IMAGE_TYPES[p.suffix.lower()], p.name, str(p.relative_to(root))))
    return "".join(out)


def report_link(root: Path, rel: str, text: str) -> Raw | str:
    """`text` linked to rel/report.html (relative, so the folder can move) where that report exists."""
    if (root / rel / "report.html").is_file():
        return link(quote(f"{Path(rel).as_posix()}/report.html", safe="/=,+"), text)  # sweep labels stay readable
    return text


# -- a training run ----------------------------------------------------------------------------
def _read(path: Path, what: str) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        raise BadInput(f"{path} is unreadable or not {what}") from None


def eval_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]], int]:
    """metrics.jsonl's periodic evaluations as (columns, rows, rows in all), at most MAX_EVAL_ROWS of them."""
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    keys = list(dict.fromkeys(k for r in evals for k in r if k.startswith("eval_")))
    cols = ["step", *keys, *(["loss"] if any("loss" in r for r in evals) else [])]
    shown = evals
    if len(evals) > MAX_EVAL_ROWS:
        every = -(-len(evals) // (MAX_EVAL_ROWS - 1))
        shown = evals[::every] + ([evals[-1]] if (len(evals) - 1) % every else [])
    return cols, [[r.get(c) for c in cols] for r in shown], len(evals)


def eval_file_section(path: Path) -> str:
    """An eval/*.json: its numbers, each flat mapping of numbers as a table, the rest as JSON."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return note(f"{path.name}: unreadable")
    if not isinstance(data, dict):
        return details(path.name, pretty_json(data))
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    parts = [f"<h3>{escape(path.name)}</h3>\n", key_values(scalars) if scalars else ""]
    rest = {}
    for k, v in data.items():
        if isinstance(v, dict) and v and all(isinstance(x, (int, float, str, type(None))) for x in v.values()):
            parts.append(table([k, "value"], [[a, b] for a, b in v.items()]))
        elif k not in scalars:
            rest[k] = v
    if rest:
        parts.append(details(f"{path.name}: the rest", pretty_json(rest)))
    return "".join(parts)


def run_html(path: Path) -> str:
    from seqlab.eval.plots import loss_by_step
    from seqlab.sweeps.summary import final_metrics

    config = _read(path / "config.json", "a run's config")
    if not isinstance(config, dict):
        raise BadInput(f"{path}/config.json is not a run's config")
    records = [r for r in read_jsonl(path / "metrics.jsonl") if isinstance(r, dict)]
    task = config.get("task", {})
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    steps = train.get("steps")
    done = records[-1].get("step") if records else 0
    kind = stored_kind(path)
    meta = meta_line([f"{kind.name if kind else '?'} run", f"task {task.get('name', '?') if isinstance(task, dict) else task}",
                      f"step {done} of {steps}", f"device {train.get('device', '?')}",
                      f"seqlab {config.get('seqlab_version', '?')}",
                      f"commit {str(config['git_commit'])[:10]}" if config.get("git_commit") else ""])
    sections = []
    final = final_metrics(path)
    metrics = [key_values(final) if final else note("Nothing logged yet.")]
    cols, rows, n = eval_rows(records)
    if rows:
        caption = f"Periodic evaluations ({n})" + (f", {len(rows)} shown" if len(rows) < n else "")
        metrics.append(f"<h3>{escape(caption)}</h3>\n" + table(cols, rows))
    metrics += [eval_file_section(p) for p in sorted((path / "eval").glob("*.json"))]
    sections.append(section("Metrics", "".join(metrics)))
    images = image_files(path)
    figures = image_figures(path, images)
    losses = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))
              and isinstance(r.get("step"), (int, float))]
    if losses and not any(p.stem.startswith("loss") for p in images):
        png = loss_by_step([s for s, _ in losses], [v for _, v in losses], title=f"{path.name}: training loss")
        figures = figure(png, "image/png", "loss by step (drawn from metrics.jsonl)",
                         "training loss by step, from metrics.jsonl") + figures
    sections.append(section("Plots", figures or note("No plots.")))
    sections.append(section("Config", pretty_json(config)))
    return page(f"Run {path.name}", meta, sections)


# -- a recipe's output folder ------------------------------------------------------------------
def claims_html(results: dict[str, Any]) -> str:
    claims = results.get("claims") or []
    if not claims:
        return note("This budget checks the wiring only; it makes no claims.")
    rows = []
    for c in claims:
        sign = "≤" if c.get("direction") == "at_most" else "≥"
        holds = "yes" if c.get("holds") else "no"
        rows.append([c.get("name"), c.get("source"), c.get("metric"), c.get("paper_value"), c.get("ours"),
                     f"{sign} {fmt(c.get('threshold'))}", Raw(f"<td class=\"{holds}\">{holds}</td>")])
    held = sum(bool(c.get("holds")) for c in claims)
    return (f"<p>{held} of {len(claims)} claims hold.</p>\n"
            + table(["claim", "source", "metric", "paper", "ours", "threshold", "holds"], rows))


def runs_table(root: Path, runs: dict[str, str]) -> str:
    """One row per run directory: a link to its report.html where it has one, and its final metrics."""
    from seqlab.sweeps.summary import final_metrics

    finals = {label: final_metrics(root / rel) for label, rel in runs.items()}
    keys = list(dict.fromkeys(k for m in finals.values() for k in m if "." not in k))
    return table(["run", "folder", *keys],
                 [[report_link(root, rel, label), rel, *[finals[label].get(k) for k in keys]] for label, rel in runs.items()])


def recipe_html(path: Path) -> str:
    from seqlab.recipes.base import read_results
    from seqlab.recipes.markdown import reproduce_command

    results = read_results(path)  # one line for a results.json that is not a recipe's (a claim without a key)
    md = path / "report.md"
    md_text = md.read_text(errors="replace") if md.is_file() else ""
    title = next((line[2:].strip() for line in md_text.splitlines() if line.startswith("# ")), f"Recipe {results['recipe']}")
    wall = results.get("wall_seconds")
    meta = meta_line([f"device {results.get('device', '?')}", f"seqlab {results.get('seqlab_version', '?')}",
                      f"{wall:.0f} s" if isinstance(wall, (int, float)) else ""], command=reproduce_command(results))
    runs = {k: v for k, v in (results.get("runs") or {}).items() if isinstance(v, str)}
    sections = [section("Claims", claims_html(results)),
                section("Metrics", key_values(results.get("metrics") or {}))]
    if runs:
        sections.append(section("Runs", runs_table(path, runs)))
    sections.append(section("Plots", image_figures(path, image_files(path)) or note("No plots.")))
    config = {k: results.get(k) for k in ("recipe", "budget", "seed", "options", "platform") if k in results}
    rest = {k: v for k, v in results.items() if k not in {*config, "claims", "metrics", "runs"}}
    sections.append(section("Config", pretty_json(config) + details("the rest of results.json", pretty_json(rest))
                            + (details("report.md", f"<pre>{escape(md_text)}</pre>\n") if md_text else "")))
    return page(title, meta, sections)


# -- which folder, and writing -----------------------------------------------------------------
def report_kind(path: Path) -> str:
    """"recipe" (results.json), "sweep" (sweep.json) or "run" (config.json); BadInput for anything else."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if not path.is_dir():
        raise BadInput(f"{path} is not a directory")
    for marker, kind in (("results.json", "recipe"), ("sweep.json", "sweep"), ("config.json", "run")):
        if (path / marker).is_file():
            return kind
    raise BadInput(f"{path} is not a run directory, a recipe's output folder or a sweep directory "
                   "(no config.json, results.json or sweep.json)")


def build_html(path: Path) -> str:
    from seqlab.reports.sweep_html import sweep_html  # it builds on this module's page pieces

    path = Path(path)
    return {"recipe": recipe_html, "sweep": sweep_html, "run": run_html}[report_kind(path)](path)


def write_reports(path: Path) -> list[Path]:
    """report.md (for a run or a recipe's folder) and report.html in `path`; everything is read and
    checked before either is written, each atomically. Returns the files written."""
    path = Path(path)
    kind = report_kind(path)
    written = []
    if kind == "recipe":  # rewrite_report checks results.json before it writes; the page shows the new report.md
        from seqlab.recipes.base import rewrite_report

        written.append(rewrite_report(path))
        html = recipe_html(path)
    else:
        html = build_html(path)
        if kind == "run":
            from seqlab.reports.markdown import write_run_report

            written.append(write_run_report(path))
    atomic_write_text(path / "report.html", html)
    return [*written, path / "report.html"]
