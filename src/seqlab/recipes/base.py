"""Recipes as data: a paper, its claims with thresholds, budgets, and a run function.

`run_recipe` owns results.json: it times the run, computes each claim's `holds` from the measured
metric, and writes the file atomically. A recipe's run function only trains, measures and plots.

A recipe's folder is marked as that recipe's by recipe.json, written before anything else, and holds the
folder's lock (seqlab.core.lock) for the whole command. `--out` must be missing, empty, or a folder of the
same recipe (which resumes: its run directories resume, results.json is written again); a run directory,
another recipe's folder or anything else is refused before anything is written.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from seqlab.core.version import __version__
from seqlab.core.errors import BadInput
from seqlab.core.io import PARTIAL_WRITE, atomic_write_text, read_json, write_json
from seqlab.core.lock import folder_lock
from seqlab.core.registry import Registry
from seqlab.runs.directory import check_writable, is_own_leftover, is_run_dir
from seqlab.train import pick_device

BUDGETS = ("smoke", "cpu", "gpu")
MARKER = "recipe.json"  # {"recipe": NAME, ...}: the folder is that recipe's, written first
OTHER_MARKERS = {"sweep.json": "a sweep directory", "self_improve.json": "a self-improvement run"}
OWN_FILES = (MARKER, "results.json")  # written only under the recipe folder's lock


@dataclass(frozen=True)
class Claim:
    """A statement the recipe tests: `metric` compared with `threshold` (`at_least` or `at_most`)."""

    name: str
    source: str
    metric: str
    threshold: float
    paper_value: float | None = None
    direction: str = "at_least"
    budgets: tuple[str, ...] = ("cpu", "gpu")  # the budgets at which the claim is tested
    when: tuple[tuple[str, Any], ...] = ()  # recipe options the claim is about, e.g. (("task", "copy"),)
    includes: tuple[tuple[str, Any], ...] = ()  # list options that must hold a value, e.g. (("tasks", "sparse-parity"),)

    def applies(self, budget: str, options: argparse.Namespace) -> bool:
        return (budget in self.budgets and all(getattr(options, k, None) == v for k, v in self.when)
                and all(v in (getattr(options, k, None) or ()) for k, v in self.includes))

    def judge(self, metrics: dict[str, Any]) -> dict[str, Any]:
        ours = metrics.get(self.metric)
        holds = ours is not None and (ours >= self.threshold if self.direction == "at_least" else ours <= self.threshold)
        return {"name": self.name, "source": self.source, "metric": self.metric, "paper_value": self.paper_value,
                "ours": ours, "threshold": self.threshold, "direction": self.direction, "holds": bool(holds)}


@dataclass
class Context:
    """What a recipe's run function gets: where to write, the budget's settings, options, seed."""

    out: Path
    budget: str
    seed: int
    settings: dict[str, Any]
    options: argparse.Namespace
    quiet: bool = False

    def run_dir(self, label: str) -> Path:
        return self.out / "runs" / label


@dataclass
class Outcome:
    metrics: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    paper: str
    description: str
    budgets: dict[str, dict[str, Any]]
    claims: list[Claim]
    run: Callable[[Context], Outcome]
    report: Callable[[Context, dict[str, Any]], str]
    options: Callable[[argparse.ArgumentParser], None] | None = None
    minutes: dict[str, float] = field(default_factory=dict)  # the time each budget is meant to take here


def task_settings(budget_settings: dict[str, Any], spec: dict[str, Any], budget: str) -> dict[str, Any]:
    """The budget's settings with the task's own changes at that budget (`spec["at"][budget]`) laid
    over them, section by section."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in budget_settings.items()}
    for k, v in spec.get("at", {}).get(budget, {}).items():
        out[k] = {**out[k], **v} if isinstance(v, dict) else v
    return out


RECIPES: Registry[Recipe] = Registry("recipe")
register = RECIPES.register  # each recipe's module calls register(Recipe(...)) once


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


def parse_options(recipe: Recipe, args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"seqlab reproduce {recipe.name}", add_help=False, exit_on_error=False)
    if recipe.options:
        recipe.options(parser)
    # Every recipe: its training runs for `scale` times the budget's steps, for a claim's trend at 2x and 4x.
    parser.add_argument("--scale", type=_scale, default=argparse.SUPPRESS)
    try:
        ns, rest = parser.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit) as e:
        raise BadInput(f"{recipe.name}: {e}") from None
    if rest:
        raise BadInput(f"{recipe.name}: unknown option {rest[0]!r}")
    return ns


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale takes a number, got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"--scale must lie in (0, 64], got {text}")
    return value


def scaled_steps(settings: Any, scale: float) -> Any:
    """The settings with every "steps" entry (train.steps, lsa.steps, ...) multiplied by scale, at least 1."""
    if isinstance(settings, dict):
        return {k: max(1, round(v * scale)) if k == "steps" and isinstance(v, int) else scaled_steps(v, scale)
                for k, v in settings.items()}
    return settings


def run_recipe(name: str, budget: str, seed: int, out: Path | None, args: list[str], quiet: bool = False) -> dict[str, Any]:
    recipe = get_recipe(name)
    if budget not in BUDGETS:
        raise BadInput(f"unknown budget '{budget}' (use smoke, cpu or gpu)")
    if budget not in recipe.budgets:
        raise BadInput(f"recipe '{name}' has no '{budget}' budget (it has: {', '.join(recipe.budgets)})")
    options = parse_options(recipe, args)
    out = Path(out) if out is not None else Path("runs") / f"{name}-{budget}"
    check_recipe_dir(out, name)
    check_writable(out)
    with folder_lock(out, what="recipe folder"):  # for the whole command: a second one is refused
        check_recipe_dir(out, name)  # again, under the lock: another command may have written it meanwhile
        for p in out.iterdir():  # what a killed run_recipe left half-written (no live writer: the lock is ours)
            m = PARTIAL_WRITE.fullmatch(p.name)
            if m and m.group(1) in OWN_FILES and p.is_file():
                p.unlink(missing_ok=True)
        if not (out / MARKER).is_file():
            write_json(out / MARKER, {"recipe": name, "budget": budget, "seed": seed, "seqlab_version": __version__})
        return _run_locked(recipe, name, budget, seed, out, options, quiet)


def check_recipe_dir(out: Path, name: str) -> None:
    """Refuse an --out that recipe `name` must not write into: a file, a run directory, another recipe's
    folder, a sweep or self-improvement folder, or any other non-empty folder. Missing, empty (seqlab's own
    lock file aside) or this recipe's folder is fine."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory")
    if not out.is_dir():
        return
    if is_run_dir(out):
        raise BadInput(f"{out} is a run directory, not a recipe's folder; choose a new --out")
    for marker, what in OTHER_MARKERS.items():
        if (out / marker).exists():
            raise BadInput(f"{out} is {what}, not a recipe's folder; choose a new --out")
    for marker in (MARKER, "results.json"):
        if (out / marker).exists():
            held = _recipe_of(out / marker)
            if held != name:
                whose = f"recipe '{held}'" if held else f"something else ({marker} is not a recipe's)"
                raise BadInput(f"{out} holds {whose}, not recipe '{name}'; choose a new --out")
            return
    if any(not is_own_leftover(p.name) for p in out.iterdir()):
        raise BadInput(f"{out} exists, is not empty and is not a recipe's folder; choose a new --out")


def _recipe_of(path: Path) -> str | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    held = data.get("recipe") if isinstance(data, dict) else None
    return held if isinstance(held, str) else None


def _run_locked(recipe: Recipe, name: str, budget: str, seed: int, out: Path, options: argparse.Namespace,
                quiet: bool) -> dict[str, Any]:
    settings = recipe.budgets[budget]
    if getattr(options, "scale", None) is not None:
        settings = scaled_steps(settings, options.scale)
    ctx = Context(out=out, budget=budget, seed=seed, settings=settings, options=options, quiet=quiet)
    t0 = time.perf_counter()
    outcome = recipe.run(ctx)
    wall = time.perf_counter() - t0
    metrics = {**outcome.metrics, "wall_seconds": round(wall, 2)}
    # A smoke run checks the wiring; it claims nothing.
    claims = [c.judge(metrics) for c in recipe.claims if c.applies(budget, options)]
    results = {
        "recipe": name, "budget": budget, "seed": seed, "device": str(pick_device()),
        "seqlab_version": __version__, "wall_seconds": round(wall, 2),
        "metrics": metrics, "claims": claims, "artifacts": outcome.artifacts, "runs": outcome.runs,
        "options": vars(options), "platform": {"python": platform.python_version(), "torch": torch.__version__,
                                               "threads": torch.get_num_threads()},
        **outcome.extra,
    }
    text = recipe.report(ctx, results)
    atomic_write_text(out / "report.md", text)
    if "report.md" not in results["artifacts"]:
        results["artifacts"].append("report.md")
    write_json(out / "results.json", results)
    results["out_dir"] = str(out)
    return results


CLAIM_KEYS = {"name": str, "source": str, "threshold": (int, float), "holds": bool}  # the keys a report needs
CLAIM_OPTIONAL = {"metric": (str, type(None)), "paper_value": (int, float, type(None)), "ours": (int, float, type(None)),
                  "direction": str}
HEADER_KEYS = {"recipe": str, "budget": str, "seed": int, "device": str, "seqlab_version": str,
               "wall_seconds": (int, float)}


def _type_name(v: Any) -> str:
    """'null', 'a str', 'an int': what a JSON value is, for a message."""
    if v is None:
        return "null"
    name = type(v).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def results_problem(results: Any) -> str | None:
    """The first thing that makes `results` not a recipe's results.json as DESIGN.md describes it, as a
    phrase; None where a report can be built from it. Claims written before `metric` and `direction`
    existed are fine (`claims_defaults`)."""
    if not isinstance(results, dict):
        return f"it holds {_type_name(results)}, not a mapping"
    for k, t in HEADER_KEYS.items():
        if k not in results:
            return f"it has no '{k}'"
        if not isinstance(results[k], t) or isinstance(results[k], bool):
            return f"'{k}' is {_type_name(results[k])}"
    for k in ("metrics", "runs", "options"):
        if k in results and not isinstance(results[k], dict):
            return f"'{k}' is {_type_name(results[k])}, not a mapping"
    if "metrics" not in results:
        return "it has no 'metrics'"
    claims = results.get("claims", [])
    if not isinstance(claims, list):
        return f"'claims' is {_type_name(claims)}, not a list"
    for i, c in enumerate(claims):
        if not isinstance(c, dict):
            return f"claim {i + 1} is {_type_name(c)}, not a mapping"
        for k, t in CLAIM_KEYS.items():
            if k not in c:
                return f"claim {i + 1} has no '{k}'"
            if not isinstance(c[k], t) or (isinstance(c[k], bool) and t is not bool):
                return f"claim {i + 1}'s '{k}' is {_type_name(c[k])}"
        for k, t in CLAIM_OPTIONAL.items():
            if k in c and (not isinstance(c[k], t) or isinstance(c[k], bool)):
                return f"claim {i + 1}'s '{k}' is {_type_name(c[k])}"
        if c.get("direction", "at_least") not in ("at_least", "at_most"):
            return f"claim {i + 1}'s 'direction' is {c['direction']!r}, not at_least or at_most"
    return None


def claims_defaults(results: dict[str, Any]) -> dict[str, Any]:
    """`results` with every claim's optional keys filled in (as DESIGN.md's example omits them)."""
    claims = [{"metric": None, "paper_value": None, "ours": None, "direction": "at_least", **c}
              for c in results.get("claims", [])]
    return {**results, "claims": claims}


def read_results(out: Path) -> dict[str, Any]:
    """A recipe folder's results.json, checked; one line for a file that is unreadable or malformed."""
    try:
        results = read_json(out / "results.json")
    except (OSError, ValueError):
        raise BadInput(f"{out}/results.json is unreadable or not JSON") from None
    problem = results_problem(results)
    if problem:
        raise BadInput(f"{out}/results.json is not a recipe's results: {problem}")
    return claims_defaults(results)


def rewrite_report(out: Path) -> Path:
    """Write a recipe folder's report.md again from its results.json (no retraining)."""
    out = Path(out)
    results = read_results(out)
    recipe = get_recipe(results["recipe"])
    if results["budget"] not in recipe.budgets:
        raise BadInput(f"{out}/results.json: recipe '{recipe.name}' has no '{results['budget']}' budget")
    options = argparse.Namespace(**results.get("options", {}))
    ctx = Context(out=out, budget=results["budget"], seed=results["seed"], settings=recipe.budgets[results["budget"]],
                  options=options, quiet=True)
    try:
        text = recipe.report(ctx, results)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:  # what the recipe's own report reads
        what = f"no {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise BadInput(f"{out}/results.json lacks what recipe '{recipe.name}' reports ({what}); "
                       f"run `seqlab reproduce {recipe.name}` again to rewrite it") from None
    atomic_write_text(out / "report.md", text)
    return out / "report.md"
