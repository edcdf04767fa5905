"""The `seqlab` command line: parses, validates, calls the library. No experiment logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from seqlab.core.console import console, silence_stdout
from seqlab.core.errors import BadInput, RunFailed

try:  # typer vendors click from 0.20 on
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

app = typer.Typer(add_completion=False, no_args_is_help=True, help="seqlab: small sequence models on generated tasks.",
                  pretty_exceptions_enable=False)
out = console(soft_wrap=True)


def _print_json(obj) -> None:
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `seqlab tasks --json | head -1`: the reader is done, which is not a failure
        silence_stdout()
        raise SystemExit(0) from None


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="one JSON object per line")):
    """List the registered tasks."""
    from seqlab.runs import KINDS

    width = max(len(name) for k in KINDS.values() for name in k.tasks)
    for k in KINDS.values():
        for name in sorted(k.tasks):
            if as_json:
                _print_json(k.task_listing(name))
            else:
                out.print(f"[bold]{name:{width}}[/bold] {k.tasks[name]().describe()}  [dim]{k.task_tag(name)}[/dim]")


@app.command()
def models(as_json: bool = typer.Option(False, "--json")):
    """List the registered architectures."""
    from seqlab.models import MODELS

    for name, text in ((name, MODELS.describe(name)) for name in MODELS):
        _print_json({"name": name, "description": text}) if as_json else out.print(f"[bold]{name:16}[/bold] {text}")


@app.command()
def recipes(as_json: bool = typer.Option(False, "--json")):
    """List the reproducible experiments."""
    from seqlab.recipes import RECIPES

    for name, r in sorted(RECIPES.items()):
        if as_json:
            _print_json({"name": name, "paper": r.paper, "description": r.description, "budgets": list(r.budgets)})
        else:
            out.print(f"[bold]{name:22}[/bold] {r.description}  [dim]({r.paper})[/dim]")


def _split_params(args: list[str]) -> tuple[dict, list[str]]:
    from seqlab.core.configs import parse_value

    task_params, format_overrides = {}, []
    for a in args:
        if "=" not in a:
            raise BadInput(f"expected key=value, got '{a}'")
        k, _, v = a.partition("=")
        if k.startswith("format."):
            format_overrides.append(a[len("format.") :])
        else:
            task_params[k] = parse_value(v)
    return task_params, format_overrides


@app.command()
def sample(
    task: str = typer.Argument(..., help="task name (see `seqlab tasks`)"),
    params: Optional[List[str]] = typer.Argument(None, help="task knobs as key=value; format.key=value renders a format"),
    n: int = typer.Option(5, "--n", help="number of examples"),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("train", "--split", help="train or test"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
):
    """Print examples of a task: prompt, target and the canonical problem in `meta`."""
    from seqlab.runs import kind_of_task

    task_params, fmt_overrides = _split_params(params or [])
    if n < 0:
        raise BadInput("--n must be >= 0")
    kind = kind_of_task(task)  # token tasks and function classes write their own prompts: no text format
    for rec in kind.sample(task, task_params, fmt_overrides, n, seed, split):
        _print_json(rec) if as_json else out.print(kind.sample_line(rec), highlight=False)


def _config_args(args: list[str] | None) -> tuple[dict | None, list[str]]:
    """`[CONFIG.yaml] [key=value ...]`: (the file's sections or None, the overrides)."""
    from seqlab.runs import load_config_file

    args = list(args or [])
    if args and "=" not in args[0]:
        return load_config_file(args[0]), args[1:]
    return None, args


@app.command()
def train(
    args: Optional[List[str]] = typer.Argument(None, help="[CONFIG.yaml] [key=value ...]"),
    out_dir: Path = typer.Option(..., "--out", help="run directory (an existing run resumes)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Train a model; rerunning on an existing run directory resumes it. Under torchrun, with
    DistributedDataParallel: train.batch_size is the global batch."""
    from seqlab.train import distributed

    try:
        _train(args, out_dir, quiet)
    finally:
        distributed.stop()  # under torchrun: leave the process group


def _train(args: list[str] | None, out_dir: Path, quiet: bool) -> None:
    from seqlab import runs

    base, overrides = _config_args(args)
    kind, config = runs.resolve_command(base, overrides, out_dir)
    summary = runs.train(out_dir, config, kind, quiet=quiet)
    ev = summary["final_eval"]
    _say_once(f"step {summary['step']}" + (f", {kind.eval_line(ev)}" if ev else "") + f"; run in {out_dir}")


def _say_once(msg: str) -> None:
    """A line on stderr, from rank 0 only where torchrun started several processes."""
    from seqlab.train.distributed import world

    if world().is_main:
        typer.echo(msg, err=True)


@app.command("eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    lengths: Optional[str] = typer.Option(None, "--lengths", help="A-B or a list, e.g. 1-50 (default: the training range)"),
    n: int = typer.Option(200, "--n", help="test problems per length"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the test split (default: the run's)"),
    baselines: str = typer.Option("least-squares", "--baselines", help="in-context runs: baselines to score beside the model"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Exact match per length on held-out problems; writes eval/by_length.json and a plot.

    On an in-context learning run: error against k (--lengths picks the k), beside --baselines."""
    from seqlab import runs

    if n < 1:
        raise BadInput("--n must be at least 1")
    request = runs.EvalRequest(lengths=lengths, n=n, seed=seed, baselines=baselines)
    run = runs.load(run_dir)
    result = run.kind.evaluate(run, request)
    if as_json:
        _print_json(result)
        return
    for part in run.kind.eval_tables(result, request):
        out.print(part)


@app.command("self-improve")
def self_improve_cmd(
    args: Optional[List[str]] = typer.Argument(None, help="[CONFIG.yaml] [key=value ...], self_improve.* included"),
    out_dir: Path = typer.Option(..., "--out", help="output folder (an existing one resumes at its last round)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Self-improvement rounds on any task and model; rerunning on the same --out resumes."""
    from seqlab.self_improve import rounds as rounds

    base, overrides = _config_args(args)
    run, si = rounds.resolve_self_improve(base, overrides, out_dir)
    reports = rounds.self_improve(out_dir, run, si, quiet=quiet)
    table = Table(title=f"self-improvement on {run.make_task().name}: {out_dir}")
    for col in ("round", "lengths", "labels kept", "kept labels right", "exact match at the round's top length"):
        table.add_column(col, justify="right")
    for r in reports:
        lengths = r.get("lengths") or [[r["train_range"][1]]]
        top = max(max(t) for t in lengths)
        lab = r.get("labels") or {}
        kept_acc = lab.get("label_accuracy_kept")
        table.add_row(str(r["round"]), " ".join("x".join(map(str, t)) for t in lengths),
                      "—" if not lab else f"{lab['kept']}/{lab['n']}", "—" if kept_acc is None else f"{kept_acc:.3f}",
                      f"{r['exact_match_by_length'].get(str(top), float('nan')):.3f}")
    out.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def reproduce(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="recipe name (see `seqlab recipes`)"),
    budget: str = typer.Option("cpu", "--budget", help="smoke | cpu | gpu"),
    seed: int = typer.Option(0, "--seed"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/RECIPE-BUDGET)"),
    quiet: bool = typer.Option(False, "--quiet"),
):
    """Run a reproducible experiment and write results.json, report.md and plots."""
    from seqlab.recipes import run_recipe

    results = run_recipe(recipe, budget, seed, out_dir, list(ctx.args), quiet=quiet)
    failed = [c for c in results["claims"] if not c["holds"]]
    out.print(f"results: {results['out_dir']}/results.json  ({len(results['claims']) - len(failed)}/{len(results['claims'])} claims hold)")


@app.command()
def sweep(
    file: Path = typer.Argument(..., help="a Python file defining CONFIGS (a list of configs) or configs()"),
    backend: str = typer.Option("local", "--backend", help="local (a pool of processes) | ray"),
    workers: Optional[int] = typer.Option(None, "--workers", help="local pool size (default: cores // threads)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (Ray CPUs) per run"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="a running Ray cluster (default: start one here)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="sweep directory (default: OUT, else runs/sweeps/STEM)"),
    summary: bool = typer.Option(False, "--summary", help="tabulate and plot the runs instead of training"),
    metric: Optional[str] = typer.Option(None, "--metric", help="--summary: the metric to plot (default: the run kind's)"),
    by: Optional[str] = typer.Option(None, "--by", help="--summary: the config key on the x axis"),
    spread: str = typer.Option("minmax", "--spread", help="--summary: band over seeds, minmax | std"),
):
    """Train every config of a sweep file (a rerun skips finished runs and resumes the others), or summarize it."""
    from seqlab.sweeps import sweep as sweeps

    if not summary and (metric or by or spread != "minmax"):
        raise BadInput("--metric, --by and --spread go with --summary")
    sw = sweeps.load_sweep(file, out_dir)
    if summary:
        from seqlab.sweeps.summary import summarize, tables

        result = summarize(sw, metric, by, spread)
        for table in tables(result):
            out.print(table)
        typer.echo(f"wrote {result['csv']}" + (f" and {result['plot']}" if result["plot"] else ""), err=True)
        return
    try:
        result = sweeps.run_sweep(sw, backend, workers, threads, ray_address)
    except KeyboardInterrupt:  # a sweep says how to resume itself; main's line is about one run
        typer.echo(f"interrupted: rerun `seqlab sweep {file}` to resume the unfinished runs", err=True)
        sys.exit(130)
    for f in result["failed"]:
        typer.echo(f"failed: {f['label']} ({file}, config {f['index']}): {f['type']}: {f['message']}", err=True)
    typer.echo(f"{result['n']} runs: {len(result['finished'])} finished now, {len(result['skipped'])} finished before, "
               f"{len(result['failed'])} failed; sweep in {result['out']}", err=True)
    if result["failed"]:
        raise RunFailed(f"{len(result['failed'])} of {result['n']} runs failed (tracebacks in {result['out']}/failures.json)")


@app.command()
def report(path: Path = typer.Argument(..., help="a run directory, a recipe's output folder or a sweep directory")):
    """Write report.html (one self-contained page that opens offline) in a run directory, a recipe's output
    folder or a sweep directory, and report.md for a run or a recipe."""
    from seqlab.reports.html import write_reports

    for written in write_reports(path):
        typer.echo(str(written))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a text-task or token-task run holding a decoder"),
    out_dir: Path = typer.Argument(..., help="folder to write (a previous export there is replaced)"),
    to: str = typer.Option(..., "--to", help="target: hf (a transformers Llama model directory)"),
):
    """Write a trained decoder for another library: --to hf gives a transformers Llama directory."""
    if to != "hf":
        raise BadInput(f"unknown export target '{to}' (the only target is hf)")
    from seqlab.export.hf import export_hf

    note = export_hf(run_dir, out_dir)
    typer.echo(f"step {note['source']['step']} of {run_dir} as a Llama (position {note['position']}) in {out_dir}", err=True)


def main() -> None:
    try:
        # Without standalone mode typer returns an exit code instead of exiting: 130 for Ctrl-C, which it
        # catches itself, so KeyboardInterrupt never reaches the handler below from a command's body.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except BadInput as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except RunFailed as e:
        typer.echo(f"run failed: {e}", err=True)
        sys.exit(1)
    except ClickException as e:  # usage errors: a missing argument, an unknown option
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `seqlab`: the help was printed
            sys.exit(0)
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2 if e.exit_code not in (0, 1) else e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted: a run directory resumes from its last checkpoint when the command is run again",
                   err=True)
        sys.exit(130)
    except BrokenPipeError:  # `seqlab tasks --json | head`: the reader is done, which is not a failure
        silence_stdout()
        sys.exit(0)
    except OSError as e:  # a write refused mid-command: a full disk, a folder made read-only under it
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise
        where = f" {e.filename}" if e.filename else ""
        typer.echo(f"run failed: cannot write{where} ({e.strerror}); what was written before is kept and the "
                   f"command resumes from it when run again", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
