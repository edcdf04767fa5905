"""Task vectors in a decoder trained from scratch on in-context mapping tasks (Yang et al. 2025).

A decoder learns `icl-map` prompts, "x → y , ... , x_q →" with one map per prompt (add k, copy the symbol at
h, reverse, a fixed permutation). For each map, the task vector of layer l is the residual stream after block
l at the query's "→", averaged over prompts of that map; it is injected by writing it over the same place of
a zero-shot query "x_q →" (no demonstrations). The share of zero-shot queries then answered exactly, by
layer, says where (and whether) the model keeps the task in one vector.

Locality. The vector is also read and written `offset` tokens before the "→" (the query word's symbols), so
every map has a grid of sites (layer, position). With gain = injection accuracy minus the zero-shot
accuracy without injection (floored at 0), `concentration` = the best site's gain over the sum of all
sites' gains: 1 when one site carries the task, 1 / (number of sites) when it is spread evenly; and
`recovered` = the best site's accuracy over the accuracy with the demonstrations in context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqlab.analysis.mapping_probes import icl_accuracy, injected_accuracy, task_vector_of
from seqlab.eval.plots import accuracy_by_layer
from seqlab.recipes.base import Context, Outcome, Recipe, register
from seqlab.recipes.mapping_base import BUDGETS, map_names, train_mapping_model
from seqlab.recipes.markdown import results_header


def site_grid(model, params: dict[str, Any], name: str, seed: int, n_vector: int, n_eval: int) -> np.ndarray:
    """Injection accuracy (n_layers, word_len + 1): row l, column k = the vector of block l, k tokens before "→"."""
    layers = len(model.blocks)
    grid = np.zeros((layers, params["word_len"] + 1))
    for k in range(params["word_len"] + 1):
        vectors = task_vector_of(model, params, name, seed, n_vector, offset=k)
        for layer in range(layers):
            grid[layer, k] = injected_accuracy(model, params, name, layer, vectors[layer], seed + 1, n_eval, offset=k)
    return grid


def locality(grid: np.ndarray, zero_shot: float, icl: float) -> dict[str, float | None]:
    """None where a measure is undefined: no site beats zero-shot (nothing to concentrate) or ICL scores 0
    (results.json is strict JSON, which has no NaN)."""
    gains = np.clip(grid - zero_shot, 0, None)
    best = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return {"best_layer": int(best[0]), "best_offset": int(best[1]), "best_injection": float(grid[best]),
            "concentration": float(gains.max() / gains.sum()) if gains.sum() > 0 else None,
            "recovered": float(grid[best] / icl) if icl > 0 else None}


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    summary, params, model = train_mapping_model(ctx, "decoder")
    metrics: dict[str, Any] = {"n_params": summary["n_params"], "train_seconds": round(summary["train_seconds"] or 0, 1)}
    curves: dict[str, dict[int, float]] = {}
    grids: dict[str, list[list[float]]] = {}
    for name in map_names(params):
        icl = icl_accuracy(model, params, name, ctx.seed + 1, s["n_eval"])
        zero = injected_accuracy(model, params, name, None, None, ctx.seed + 1, s["n_eval"])
        grid = site_grid(model, params, name, ctx.seed, s["n_vector"], s["n_eval"])
        grids[name] = grid.round(4).tolist()
        curves[name] = {layer: float(grid[layer, 0]) for layer in range(grid.shape[0])}
        metrics.update({f"{name}.icl_accuracy": icl, f"{name}.zero_shot": zero,
                        **{f"{name}.{k}": v for k, v in locality(grid, zero, icl).items()},
                        **{f"{name}.injection.layer{layer}": float(grid[layer, 0]) for layer in range(grid.shape[0])}})
    names = map_names(params)
    for key in ("icl_accuracy", "zero_shot", "best_injection", "concentration", "recovered"):
        values = [metrics[f"{n}.{key}"] for n in names if metrics[f"{n}.{key}"] is not None]
        metrics[f"mean.{key}"] = float(np.mean(values)) if values else None
    accuracy_by_layer(curves, ctx.out / "plots" / "injection_by_layer.png",
                      title="task vector injected at the query's arrow into zero-shot queries",
                      reference={n: metrics[f"{n}.icl_accuracy"] for n in names})
    return Outcome(metrics=metrics, runs={"decoder": "runs/decoder"}, artifacts=["plots/injection_by_layer.png"],
                   extra={"grids": grids})


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    names = [k[: -len(".icl_accuracy")] for k in m if k.endswith(".icl_accuracy") and not k.startswith("mean.")]
    layers = sorted({int(k.rsplit("layer", 1)[1]) for k in m if ".injection.layer" in k})
    lines = [results_header(results, "Task vectors in a decoder trained on in-context mapping tasks"),
             f"A {m.get('n_params', 0):,}-parameter decoder ({m.get('train_seconds')} s of training). Exact-match "
             "accuracy of zero-shot queries with each map's task vector written over a block's output at the query's "
             "arrow; ICL = with the demonstrations in context, zero-shot = without them and without a vector.\n",
             "| map | ICL | zero-shot | " + " | ".join(f"layer {la}" for la in layers)
             + " | best site (layer, tokens before the arrow) | concentration | recovered |",
             "|---|---:|---:|" + "---:|" * len(layers) + "---|---:|---:|"]
    for n in names:
        cells = " | ".join(f"{m[f'{n}.injection.layer{la}']:.3f}" for la in layers)
        lines.append(f"| {n} | {m[f'{n}.icl_accuracy']:.3f} | {m[f'{n}.zero_shot']:.3f} | {cells} | "
                     f"({m[f'{n}.best_layer']}, {m[f'{n}.best_offset']}) {m[f'{n}.best_injection']:.3f} | "
                     f"{_num(m[f'{n}.concentration'])} | {_num(m[f'{n}.recovered'])} |")
    lines.append(f"\nMean over maps: best injection {_num(m.get('mean.best_injection'))}, concentration "
                 f"{_num(m.get('mean.concentration'))}, recovered {_num(m.get('mean.recovered'))} (— where undefined: "
                 "no site beats zero-shot).\n")
    lines.append("![injection by layer](plots/injection_by_layer.png)\n")
    return "\n".join(lines)


register(Recipe(
    name="task-vectors",
    paper="Yang et al. 2025, Task Vectors in In-Context Learning: Emergence, Formation, and Benefits",
    description="task vectors of in-context mapping tasks: injection accuracy by layer and how local they are",
    budgets=BUDGETS,
    claims=[],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 15.0},
))
