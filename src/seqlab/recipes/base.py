"""Recipes as data: a paper, its claims with thresholds, budgets, and a run function.

`run_recipe` owns results.json: it times the run, computes each claim's `holds` from the measured
metric, and writes the file atomically. A recipe's run function only trains, measures and plots.
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
from seqlab.core.io import atomic_write_text, read_json, write_json
from seqlab.core.registry import Registry
from seqlab.runs.directory import check_writable
from seqlab.train import pick_device

BUDGETS = ("smoke", "cpu", "gpu")


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

    def applies(self, budget: str, options: argparse.Namespace) -> bool:
        return budget in self.budgets and all(getattr(options, k, None) == v for k, v in self.when)

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
    try:
        ns, rest = parser.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit) as e:
        raise BadInput(f"{recipe.name}: {e}") from None
    if rest:
        raise BadInput(f"{recipe.name}: unknown option {rest[0]!r}")
    return ns


def run_recipe(name: str, budget: str, seed: int, out: Path | None, args: list[str], quiet: bool = False) -> dict[str, Any]:
    recipe = get_recipe(name)
    if budget not in BUDGETS:
        raise BadInput(f"unknown budget '{budget}' (use smoke, cpu or gpu)")
    if budget not in recipe.budgets:
        raise BadInput(f"recipe '{name}' has no '{budget}' budget (it has: {', '.join(recipe.budgets)})")
    options = parse_options(recipe, args)
    out = Path(out) if out is not None else Path("runs") / f"{name}-{budget}"
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory")
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, budget=budget, seed=seed, settings=recipe.budgets[budget], options=options, quiet=quiet)
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


def rewrite_report(out: Path) -> Path:
    """Write a recipe folder's report.md again from its results.json (no retraining)."""
    out = Path(out)
    try:
        results = read_json(out / "results.json")
        recipe = get_recipe(results["recipe"])
        settings = recipe.budgets[results["budget"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(f"{out}/results.json is unreadable or not a recipe's results") from None
    options = argparse.Namespace(**results.get("options", {}))
    ctx = Context(out=out, budget=results["budget"], seed=results["seed"], settings=settings, options=options, quiet=True)
    atomic_write_text(out / "report.md", recipe.report(ctx, results))
    return out / "report.md"
