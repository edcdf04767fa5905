"""Predictive Pipelined Decoding (Yang, Lee, Cho, Papailiopoulos, Lee, TMLR 2024) on trained decoders, beside
speculative decoding with a smaller draft (Leviathan et al. 2023) and self-speculation through an early exit
(LayerSkip, Elhoushi et al. 2024), all exact under greedy decoding.

Per task: a decoder of N blocks is trained; exit heads are trained on it frozen (seqlab.serve.early_exit); each
block's exit is scored offline (teacher-forced, held-out answers) by how often its top-k holds the model's greedy
token. PPD then decodes held-out prompts from each exit d and top-k, on the logical clock of layer-steps
(seqlab.serve.ppd): its critical path is set against the analytic model N + (T - 1)(p d + (1 - p) N) at the
offline match rate p, and against sequential decoding's N T. Speculative and self-speculative decoding are counted
on the same clock (a pass costs its model's depth) and timed on the wall.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from seqlab.formats.tokenizer import EOS
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.ppd_report import plot_all, report
from seqlab.runs import load, make_config, train as train_run
from seqlab.serve.early_exit import match_rates, train_exit_heads
from seqlab.serve.ppd import analytic_layer_steps, ppd_generate
from seqlab.serve.self_speculative import layer_steps, self_speculative_generate
from seqlab.serve.speculative import speculative_generate

_TRAIN = {"eval_every": 500, "eval_n": 256, "log_every": 100, "checkpoint_every": 500}
BUDGETS = {
    "smoke": {"tasks": ["copy"], "max_len": 4, "model": {"n_layers": 3, "d_model": 32, "n_heads": 2},
              "draft_model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
              "train": {"steps": 10, "batch_size": 16, "lr": 3e-3, "warmup": 2, "eval_every": 10, "eval_n": 16,
                        "log_every": 10, "checkpoint_every": 10},
              "exit_steps": 5, "exit_batch": 8, "n_prompts": 4, "n_offline": 16, "top_ks": [1, 2], "gamma": 3},
    "cpu": {"tasks": ["copy", "reverse"], "max_len": 16, "model": {"n_layers": 4, "d_model": 128, "n_heads": 4},
            "draft_model": {"n_layers": 1, "d_model": 64, "n_heads": 2},
            "train": {"steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup": 100, **_TRAIN},
            "exit_steps": 400, "exit_batch": 64, "n_prompts": 64, "n_offline": 512, "top_ks": [1, 2, 4], "gamma": 4},
    "gpu": {"tasks": ["copy", "reverse", "sort"], "max_len": 32, "model": {"n_layers": 8, "d_model": 256, "n_heads": 8},
            "draft_model": {"n_layers": 2, "d_model": 128, "n_heads": 4},
            "train": {"steps": 8000, "batch_size": 128, "lr": 1e-3, "warmup": 400, **_TRAIN},
            "exit_steps": 2000, "exit_batch": 128, "n_prompts": 256, "n_offline": 2048, "top_ks": [1, 2, 4], "gamma": 4},
}


def encoded(run, split: str, n: int, seed: int, offset: int = 0) -> list:
    return [run.format.encode(run.task.example(seed, split, offset + i)) for i in range(n)]


def as_batch(encs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt and answer, right-padded to one length: tokens, position ids (B, L) and the mask of the positions where
    PPD launches branches: those that read an answer token whose successor is not the last (a read whose next token
    ends the answer launches nothing, so its exit's guess is not on the clock and is left out of the match rate)."""
    L = max(len(e.prompt) + len(e.answer) for e in encs)
    tokens, pos, mask = torch.zeros(len(encs), L, dtype=torch.long), torch.zeros(len(encs), L, dtype=torch.long), \
        torch.zeros(len(encs), L, dtype=torch.bool)
    for i, e in enumerate(encs):
        seq = e.prompt + e.answer
        ids = e.prompt_pos + [e.answer_pos_base + j for j in range(len(e.answer))]
        tokens[i, :len(seq)], pos[i, :len(seq)] = torch.tensor(seq), torch.tensor(ids)
        mask[i, len(e.prompt):len(seq) - 2] = True
    return tokens, pos, mask


def prompts(encs: list):
    for e in encs:
        yield (torch.tensor([e.prompt]), torch.tensor([e.prompt_pos]), torch.tensor([e.answer_pos_base]),
               len(e.answer) + 2)


def ratio(a: float, b: float) -> float:
    """a / b, and 1 where nothing was decoded (an untrained model's first token can be the end): nothing saved."""
    return a / b if b else 1.0


def reads(out: torch.Tensor) -> int:
    """Tokens a decoder reads after the prompt to write `out` (1, n): every written token but the last."""
    row = out[0].tolist()
    return (row.index(EOS) + 1 if EOS in row else len(row)) - 1


def greedy_outputs(model, encs: list) -> tuple[list, float]:
    outs, t0 = [], time.perf_counter()
    for p, pos, base, n in prompts(encs):
        outs.append(model.generate(p, pos, base, n, eos=EOS))
    return outs, time.perf_counter() - t0


def ppd_study(model, heads, encs, greedy, offline: dict, s: dict) -> list[dict]:
    N = len(model.blocks)
    rows = []
    for d in range(1, N):
        for k in s["top_ks"]:
            same, measured, analytic, computations, matched, launches = True, 0, 0.0, 0, 0, 0
            p_off = offline[k][d - 1]
            for (p, pos, base, n), want in zip(prompts(encs), greedy):
                got, st = ppd_generate(model, p, pos, base, n, EOS, exit_layer=d, top_k=k, heads=heads)
                same &= torch.equal(got, want)
                measured += st.critical_path
                analytic += analytic_layer_steps(st.tokens, N, d, p_off) if st.tokens else 0.0
                computations += st.layer_computations
                matched, launches = matched + st.matched, launches + max(st.tokens - 1, 0)
            sequential = sum(reads(w) for w in greedy) * N
            rows.append({"exit_layer": d, "top_k": k, "identical": same, "offline_match": p_off,
                         "online_match": matched / max(launches, 1), "critical_path": measured, "analytic": analytic,
                         "analytic_error": abs(measured / analytic - 1) if analytic else 0.0, "sequential": sequential,
                         "saved": 1 - ratio(measured, sequential), "extra_compute": ratio(computations, sequential) - 1})
    return rows


def speculative_study(model, draft, heads, encs, greedy, greedy_seconds: float, s: dict) -> list[dict]:
    N, rows = len(model.blocks), []
    sequential = sum(reads(w) for w in greedy) * N
    runs = [("draft model", draft.config.n_layers, None)] + [(f"self, exit {d}", d, d) for d in range(1, N)]
    for name, depth, exit_layer in runs:
        same, crit, acc, prop, t0 = True, 0, 0, 0, time.perf_counter()
        for (p, pos, base, n), want in zip(prompts(encs), greedy):
            if exit_layer is None:
                got, st = speculative_generate(model, draft, p, pos, base, n, EOS, gamma=s["gamma"])
            else:
                got, st = self_speculative_generate(model, p, pos, base, n, EOS, exit_layer, s["gamma"], heads)
            same &= torch.equal(got, want)
            # The prefills (one pass of each model over the prompt) are not on PPD's clock either: taken off.
            crit += layer_steps(st, N, depth)["critical_path"] - N - depth
            acc, prop = acc + st.accepted, prop + st.proposed
        seconds = time.perf_counter() - t0
        rows.append({"method": name, "identical": same, "acceptance": acc / max(prop, 1), "critical_path": crit,
                     "sequential": sequential, "saved": 1 - ratio(crit, sequential),
                     "wall_seconds": seconds, "wall_speedup": greedy_seconds / seconds})
    return rows


def study_task(ctx: Context, task: str) -> dict[str, Any]:
    s = ctx.settings
    cfg = lambda m: make_config({"task": {"name": task, "max_len": s["max_len"]},  # noqa: E731
                                 "model": {"arch": "decoder", "position": "rope", **m},
                                 "train": {**s["train"], "seed": ctx.seed}})
    trained = train_run(ctx.run_dir(task), cfg(s["model"]), quiet=ctx.quiet)
    train_run(ctx.run_dir(f"{task}-draft"), cfg(s["draft_model"]), quiet=ctx.quiet)
    run = load(ctx.run_dir(task))
    model, draft = run.model.cpu().eval(), load(ctx.run_dir(f"{task}-draft")).model.cpu().eval()
    torch.manual_seed(ctx.seed)
    B = s["exit_batch"]
    heads = train_exit_heads(model, lambda step: as_batch(encoded(run, "train", B, ctx.seed, step * B)), s["exit_steps"])
    off = as_batch(encoded(run, "test", s["n_offline"], ctx.seed, 10_000))
    offline = {k: match_rates(model, *off, heads=heads, top_k=k) for k in s["top_ks"]}
    lens = match_rates(model, *off, heads=None, top_k=1)
    encs = encoded(run, "test", s["n_prompts"], ctx.seed)
    greedy, greedy_seconds = greedy_outputs(model, encs)
    return {"train_seconds": trained["train_seconds"], "exact_match": (trained.get("final_eval") or {}).get("exact_match"),
            "n_layers": len(model.blocks), "offline_match": offline, "logit_lens_match": lens,
            "ppd": ppd_study(model, heads, encs, greedy, offline, s),
            "speculative": speculative_study(model, draft, heads, encs, greedy, greedy_seconds, s),
            "greedy_wall_seconds": greedy_seconds}


def run(ctx: Context) -> Outcome:
    tasks = {t: study_task(ctx, t) for t in ctx.settings["tasks"]}
    rows = [dict(r, task=t) for t, r_ in tasks.items() for r in r_["ppd"]]
    spec = [dict(r, task=t) for t, r_ in tasks.items() for r in r_["speculative"]]
    high = [r for r in rows if r["online_match"] >= 0.8]
    metrics: dict[str, Any] = {
        "identical_share": float(np.mean([r["identical"] for r in rows + spec])),
        "analytic.max_error": max(r["analytic_error"] for r in rows),
        "analytic.mean_error": float(np.mean([r["analytic_error"] for r in rows])),
        "match_at_least_0.8.configs": len(high),
        "match_at_least_0.8.min_saved": min((r["saved"] for r in high), default=None),
        "match_at_least_0.8.max_extra_compute": max((r["extra_compute"] for r in high), default=None),
        "best_saved": max(r["saved"] for r in rows),
    }
    for t, r in tasks.items():
        metrics[f"{t}.exact_match"] = r["exact_match"]
        for d, p in enumerate(r["offline_match"][1][:-1], start=1):
            metrics[f"{t}.match.exit{d}"] = p
            metrics[f"{t}.logit_lens.exit{d}"] = r["logit_lens_match"][d - 1]
        for row in r["speculative"]:
            metrics[f"{t}.{row['method'].replace(', ', '_').replace(' ', '_')}.saved"] = row["saved"]
            metrics[f"{t}.{row['method'].replace(', ', '_').replace(' ', '_')}.wall_speedup"] = row["wall_speedup"]
    artifacts = plot_all(ctx.out / "plots", tasks)
    return Outcome(metrics=metrics, runs={t: f"runs/{t}" for t in tasks}, artifacts=artifacts,
                   extra={"tasks": tasks})


register(Recipe(
    name="ppd",
    paper="Yang, Lee, Cho, Papailiopoulos, Lee, TMLR 2024 (Predictive Pipelined Decoding); Leviathan et al. 2023; "
          "Elhoushi et al. 2024 (LayerSkip)",
    description="pipelined decoding from early exits on a layer-step clock, against speculative and self-speculative",
    budgets=BUDGETS,
    claims=[
        Claim("PPD, speculative and self-speculative outputs are greedy decoding's on every prompt (share)", "exactness",
              metric="identical_share", threshold=1.0),
        Claim("PPD's measured critical path is within 5% of the analytic model at the offline match rate (largest "
              "error over tasks, exits and k)", "Yang et al. 2024", metric="analytic.max_error", threshold=0.05,
              direction="at_most"),
        Claim("where the match rate is >= 0.8, PPD takes >= 20% fewer layer-steps on the critical path (the least "
              "saving among those settings)", "Yang et al. 2024", metric="match_at_least_0.8.min_saved", threshold=0.20),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 15.0},
))
