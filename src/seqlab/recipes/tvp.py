"""The task vector prompting loss (Yang et al. 2025): train with and without it, compare the task vectors.

Two decoders learn the same `icl-map` prompts for the same steps; one adds the TVP-loss (seqlab.train.tvp):
each prompt's state after block `layer` at its query's "→" is written into its own zero-shot query, whose
answer loss is added. Measured for both:

- injection accuracy at the prescribed layer: each map's task vector (the mean over prompts of that
  state) written over the same place of zero-shot queries; the share answered exactly, mean over maps;
- in-context accuracy in distribution (4 to 8 demonstrations, as in training) and out of it: more
  demonstrations than training ever showed, and prompts where two of the demonstrations come from another
  map (the query is scored on the majority map's answer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqlab.analysis.mapping_probes import icl_accuracy, injected_accuracy, map_prompts, task_vector_of, with_answer
from seqlab.analysis.task_vectors import teacher_forced
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.mapping_base import BUDGETS, map_names, train_mapping_model
from seqlab.recipes.markdown import results_header

DISTRACTORS = 2  # demonstrations of another map in a "distracted" prompt
TVP_WEIGHT = 1.0


def distracted_accuracy(model, params, name: str, other: str, demos: int, seed: int, n: int) -> float:
    """Prompts of `demos` demonstrations, DISTRACTORS of them from `other`: the share whose query gets `name`'s
    answer exactly (teacher-forced argmax)."""
    task, tokens, _, metas = map_prompts(params, seed, "test", n, task=None, n_demos_min=None,
                                         mix=f"{name}:{demos - DISTRACTORS},{other}:{DISTRACTORS}")
    seqs, targets = with_answer(task, tokens, metas, name)
    right, _ = teacher_forced(model, seqs, targets)
    return float(right.float().mean())


def measure(model, params, s, seed) -> dict[str, float]:
    names, layer = map_names(params), s["layer"]
    out: dict[str, list[float]] = {"injection": [], "icl": [], "long": [], "distracted": []}
    for j, name in enumerate(names):
        vector = task_vector_of(model, params, name, seed, s["n_vector"])[layer]
        out["injection"].append(injected_accuracy(model, params, name, layer, vector, seed + 1, s["n_eval"]))
        out["icl"].append(icl_accuracy(model, params, name, seed + 1, s["n_eval"]))
        out["long"].append(icl_accuracy(model, params, name, seed + 1, s["n_eval"], n_demos=s["long_demos"],
                                        n_demos_min=None))
        other = names[(j + 1) % len(names)]
        out["distracted"].append(distracted_accuracy(model, params, name, other, s["demos"], seed + 1, s["n_eval"]))
    return {k: float(np.mean(v)) for k, v in out.items()}


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    metrics: dict[str, Any] = {"layer": s["layer"], "tvp_weight": TVP_WEIGHT}
    for label, tvp in (("plain", None), ("tvp", {"layer": s["layer"], "weight": TVP_WEIGHT})):
        summary, params, model = train_mapping_model(ctx, label, tvp=tvp)
        metrics[f"{label}.train_seconds"] = round(summary["train_seconds"] or 0, 1)
        metrics.update({f"{label}.{k}": v for k, v in measure(model, params, s, ctx.seed).items()})
    for k in ("injection", "icl", "long", "distracted"):
        metrics[f"gain.{k}"] = metrics[f"tvp.{k}"] - metrics[f"plain.{k}"]
    metrics["gain.ood"] = (metrics["gain.long"] + metrics["gain.distracted"]) / 2
    return Outcome(metrics=metrics, runs={"plain": "runs/plain", "tvp": "runs/tvp"})


def report(ctx: Context, results: dict[str, Any]) -> str:
    m = results["metrics"]
    rows = [f"| {label} | {m[f'{label}.train_seconds']} | {m[f'{label}.injection']:.3f} | {m[f'{label}.icl']:.3f} | "
            f"{m[f'{label}.long']:.3f} | {m[f'{label}.distracted']:.3f} |" for label in ("plain", "tvp") if f"{label}.icl" in m]
    return (results_header(results, "TVP-loss: task vectors at a prescribed layer")
            + f"Task vectors read and injected after block {m.get('layer')}; TVP weight {m.get('tvp_weight')}. Exact-match "
            "accuracy, mean over maps.\n\n"
            + "| training | seconds | zero-shot with the vector | in context | more demonstrations | "
            f"{DISTRACTORS} distractors |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")


register(Recipe(
    name="tvp",
    paper="Yang et al. 2025, Task Vectors in In-Context Learning: Emergence, Formation, and Benefits",
    description="training with and without the task vector prompting loss: injection accuracy and robustness",
    budgets=BUDGETS,
    claims=[
        Claim("with the TVP-loss, the task vector at the prescribed layer answers zero-shot queries (>= 90%)",
              "Yang et al. 2025", metric="tvp.injection", threshold=0.9),
        Claim("the TVP-loss gains accuracy on out-of-distribution prompts (mean gain >= 0.01)", "Yang et al. 2025",
              metric="gain.ood", threshold=0.01),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 25.0},
))
