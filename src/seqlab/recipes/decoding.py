"""Decoding algorithms on a language whose true distribution is known: a decoder trained on the `hmm` task
(sequences of a hidden Markov model), then decoded by each method, with every generated sequence scored by
the true model (the forward algorithm) as well as by the trained one.

(1) Mirostat 2.0 (Basu et al. 2021) against top-k across temperatures: Mirostat's feedback holds the mean
    surprise of the written tokens at its target tau; a fixed top-k's surprise moves with the temperature.
(2) Locally typical sampling (Meister et al. 2023) against nucleus (top-p) sampling at matched diversity: whose
    sequences have a true per-token log-likelihood closer to the language's entropy rate?
(3) Diverse beam search (Vijayakumar et al. 2018) against beam search: distinct 4-grams among the returned beams
    against the loss of mean log-probability, over the diversity penalty.

Surprise in (1) is measured on the distribution each method draws from before truncation (the trained model's
at that temperature), teacher-forced after decoding, with the first `burn_in` tokens left out while mu settles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlab.eval.beam_search import beam_search
from seqlab.eval.logits_processors import Banned
from seqlab.eval.sampling import Sampler, sampler_from
from seqlab.eval.sequence_stats import distinct_ngrams, surprise_bits
from seqlab.recipes.base import Claim, Context, Outcome, Recipe, register
from seqlab.recipes.decoding_report import plot_all, report
from seqlab.runs import load, make_config, train as train_run
from seqlab.tasks.hmm import language
from seqlab.tasks.token_base import get_token_task

BUDGETS = {
    "smoke": {"task": {"n_states": 4, "n_symbols": 8, "length": 16},
              "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
              "train": {"steps": 20, "batch_size": 16, "lr": 3e-3, "warmup": 2, "eval_every": 10, "eval_n": 16,
                        "log_every": 10, "checkpoint_every": 10},
              "n_samples": 16, "burn_in": 2, "tau_share": 0.85, "mirostat_eta": 0.5, "other_etas": [0.1], "temperatures": [0.7, 1.5], "top_k": 3,
              "masses": [0.5, 0.9], "beams": {"n_prompts": 4, "prompt_len": 4, "new": 8, "n_beams": 4, "n_groups": 2,
                                               "diversities": [0.5, 2.0]},
              "entropy_sequences": 16},
    "cpu": {"task": {"n_states": 8, "n_symbols": 32, "length": 64, "concentration": 0.3},
            "model": {"n_layers": 2, "d_model": 64, "n_heads": 4},
            "train": {"steps": 3000, "batch_size": 64, "lr": 3e-3, "warmup": 200, "eval_every": 1000, "eval_n": 256,
                      "log_every": 100, "checkpoint_every": 500},
            # tau must be reachable at every temperature: Mirostat only truncates, so the mean surprise can lie
            # between the likeliest token's (3.8 bits at T = 1.5 on this language) and the entropy (4.3 at T = 0.7),
            # by the true model's predictive distributions; 0.87 of the entropy rate (4.58) is 4.0, inside.
            # eta 0.5, not the paper's 0.1: mu starts at 2 tau (8 bits), above every token's surprise, so nothing is
            # cut until mu has come down to the distribution; at 0.1 that takes about 200 tokens, past these 64-token
            # sequences (measured: no truncation, error 0.15-0.48 bits). 0.1 is still run and reported.
            "n_samples": 512, "burn_in": 10, "tau_share": 0.87, "mirostat_eta": 0.5, "other_etas": [0.1],
            "temperatures": [0.7, 0.85, 1.0, 1.25, 1.5], "top_k": 4,
            "masses": [0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.99],
            "beams": {"n_prompts": 64, "prompt_len": 8, "new": 24, "n_beams": 8, "n_groups": 4,
                      "diversities": [0.1, 0.25, 0.5, 1.0, 2.0, 4.0]},
            "entropy_sequences": 2000},
    "gpu": {"task": {"n_states": 32, "n_symbols": 256, "length": 128, "concentration": 0.3},
            "model": {"n_layers": 4, "d_model": 256, "n_heads": 8},
            "train": {"steps": 20000, "batch_size": 128, "lr": 1e-3, "warmup": 1000, "eval_every": 2000, "eval_n": 1024,
                      "log_every": 200, "checkpoint_every": 2000},
            # The same window here: 7.1 bits (likeliest token at T = 1.5) to 7.8 (entropy at T = 0.7); 0.94 H = 7.4.
            "n_samples": 4096, "burn_in": 10, "tau_share": 0.94, "mirostat_eta": 0.5, "other_etas": [0.1],
            "temperatures": [0.7, 0.85, 1.0, 1.25, 1.5], "top_k": 8,
            "masses": [0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.99],
            "beams": {"n_prompts": 256, "prompt_len": 16, "new": 48, "n_beams": 8, "n_groups": 4,
                      "diversities": [0.1, 0.25, 0.5, 1.0, 2.0, 4.0]},
            "entropy_sequences": 10000},
}


def sample(model, n: int, length: int, bos: int, sampler: Sampler, seed: int) -> torch.Tensor:
    """n sequences of `length` symbols written after the start token: (n, length)."""
    torch.manual_seed(seed)
    prompt = torch.full((n, 1), bos, dtype=torch.long)
    return model.generate(prompt, torch.zeros(n, 1, dtype=torch.long), torch.ones(n, dtype=torch.long), length,
                          eos=-1, pick=sampler)


def make_sampler(bos: int, seed: int, **knobs) -> Sampler:
    return sampler_from({**knobs, "seed": seed}, first=(Banned((bos,)),))


def mean_surprise(model, seqs: torch.Tensor, bos: int, temperature: float, burn_in: int) -> float:
    n = seqs.shape[0]
    s = surprise_bits(model, torch.full((n, 1), bos), torch.zeros(n, 1, dtype=torch.long), torch.ones(n, dtype=torch.long),
                      seqs, temperature)
    return float(s[:, burn_in:].mean())


def true_surprise(lang, seqs: torch.Tensor) -> float:
    """Mean -log2 p_true per token of the sequences, by the forward algorithm."""
    return float(np.mean([-lang.log_likelihood(np.asarray(s)) / np.log(2) / len(s) for s in seqs.tolist()]))


def mirostat_surprise(model, s: dict, bos: int, length: int, tau: float, eta: float, seed: int) -> list[float]:
    return [mean_surprise(model, sample(model, s["n_samples"], length, bos, make_sampler(
        bos, seed, temperature=t, mirostat_tau=tau, mirostat_eta=eta), seed), bos, t, s["burn_in"])
        for t in s["temperatures"]]


def mirostat_against_top_k(model, s: dict, bos: int, length: int, tau: float, seed: int) -> dict[str, Any]:
    rows = {"mirostat": mirostat_surprise(model, s, bos, length, tau, s["mirostat_eta"], seed), "top_k": []}
    for t in s["temperatures"]:
        topk = sample(model, s["n_samples"], length, bos, make_sampler(bos, seed, temperature=t, top_k=s["top_k"]), seed)
        rows["top_k"].append(mean_surprise(model, topk, bos, t, s["burn_in"]))
    return rows


def typical_against_top_p(model, s: dict, lang, bos: int, length: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in ("typical", "top_p"):
        div, true_s = [], []
        for mass in s["masses"]:
            seqs = sample(model, s["n_samples"], length, bos, make_sampler(bos, seed, temperature=1.0, **{method: mass}), seed)
            div.append(distinct_ngrams(seqs.tolist(), 4))
            true_s.append(true_surprise(lang, seqs))
        out[method] = {"mass": s["masses"], "distinct4": div, "true_surprise": true_s}
    return out


def matched_gap_difference(curves: dict, entropy_rate: float) -> tuple[float, int]:
    """Mean over typical's settings, where top-p reaches the same distinct-4, of |gap top-p| - |gap typical|, the
    gaps being true per-token surprise minus the entropy rate (top-p's gap interpolated in distinct-4); and how
    many settings were matched. Positive: typical is closer to the entropy rate."""
    tp, ty = curves["top_p"], curves["typical"]
    order = np.argsort(tp["distinct4"])
    d_tp, g_tp = np.asarray(tp["distinct4"])[order], np.abs(np.asarray(tp["true_surprise"])[order] - entropy_rate)
    diffs = [float(np.interp(d, d_tp, g_tp)) - abs(g - entropy_rate)
             for d, g in zip(ty["distinct4"], ty["true_surprise"]) if d_tp[0] <= d <= d_tp[-1]]
    return (float(np.mean(diffs)) if diffs else float("nan")), len(diffs)


def beams_study(model, s: dict, task, seed: int) -> dict[str, Any]:
    b = s["beams"]
    tokens, _ = task.batch(seed, "test", 0, b["n_prompts"])
    prompt = torch.as_tensor(tokens[:, :1 + b["prompt_len"]])  # the start token and the first symbols
    n, Lp = prompt.shape
    pos, base = torch.arange(Lp).expand(n, Lp), torch.full((n,), Lp)

    def measure(groups: int, diversity: float) -> dict[str, float]:
        out = beam_search(model, prompt, pos, base, b["new"], eos=-1, n_beams=b["n_beams"], n_groups=groups,
                          diversity=diversity, length_penalty=0.0)
        distinct = np.mean([distinct_ngrams(out.tokens[i].tolist(), 4) for i in range(n)])
        return {"distinct4": float(distinct), "mean_logprob": float(out.logprob.mean())}

    plain = measure(1, 0.0)
    rows = [{"diversity": lam, **measure(b["n_groups"], lam)} for lam in b["diversities"]]
    for r in rows:
        r["distinct_gain"] = r["distinct4"] / plain["distinct4"] - 1
        r["logprob_loss"] = (plain["mean_logprob"] - r["mean_logprob"]) / abs(plain["mean_logprob"])
    return {"plain": plain, "diverse": rows}


def run(ctx: Context) -> Outcome:
    s = ctx.settings
    task_cfg = {"name": "hmm", **s["task"]}
    config = make_config({"task": task_cfg, "model": {"arch": "decoder", "position": "rope", **s["model"]},
                          "train": {**s["train"], "seed": ctx.seed}})
    summary = train_run(ctx.run_dir("decoder"), config, quiet=ctx.quiet)
    model = load(ctx.run_dir("decoder")).model.cpu().eval()
    task = get_token_task("hmm", **s["task"])
    lang, bos, length = language(task.config), task.config.n_symbols, task.config.length
    entropy_rate, entropy_se = lang.entropy_rate_bits(s["entropy_sequences"], length, ctx.seed)
    tau = round(s["tau_share"] * entropy_rate, 3)
    miro = mirostat_against_top_k(model, s, bos, length, tau, ctx.seed)
    curves = typical_against_top_p(model, s, lang, bos, length, ctx.seed)
    gap_diff, matched = matched_gap_difference(curves, entropy_rate)
    beams = beams_study(model, s, task, ctx.seed)
    within = [r for r in beams["diverse"] if r["logprob_loss"] <= 0.05]
    metrics: dict[str, Any] = {
        "train_seconds": round(summary["train_seconds"] or 0.0, 1), "entropy_rate_bits": entropy_rate,
        "entropy_rate_se": entropy_se, "mirostat.tau": tau,
        "mirostat.max_abs_error": max(abs(x - tau) for x in miro["mirostat"]),
        "mirostat.range": max(miro["mirostat"]) - min(miro["mirostat"]), "mirostat.eta": s["mirostat_eta"],
        "top_k.range": max(miro["top_k"]) - min(miro["top_k"]),
        "typical_minus_top_p.gap_advantage": gap_diff, "typical_minus_top_p.matched": matched,
        "pure_sampling.true_surprise": true_surprise(lang, sample(model, s["n_samples"], length, bos,
                                                                  make_sampler(bos, ctx.seed, temperature=1.0), ctx.seed)),
        "beam.distinct4": beams["plain"]["distinct4"], "beam.mean_logprob": beams["plain"]["mean_logprob"],
        "diverse_beam.best_gain_within_5pct": max((r["distinct_gain"] for r in within), default=0.0),
    }
    for eta in s.get("other_etas", []):  # the paper's eta, reported beside the one the claim is judged at
        other = mirostat_surprise(model, s, bos, length, tau, eta, ctx.seed)
        miro[f"mirostat_eta{eta:g}"] = other
        metrics[f"mirostat.eta{eta:g}.max_abs_error"] = max(abs(x - tau) for x in other)
    for t, a, b in zip(s["temperatures"], miro["mirostat"], miro["top_k"]):
        metrics[f"mirostat.surprise.T{t}"], metrics[f"top_k.surprise.T{t}"] = a, b
    artifacts = plot_all(ctx.out / "plots", s, miro, tau, curves, entropy_rate, beams)
    return Outcome(metrics=metrics, runs={"decoder": "runs/decoder"}, artifacts=artifacts,
                   extra={"surprise_by_temperature": {"temperatures": s["temperatures"], **miro},
                          "typical_top_p": curves, "beams": beams})


register(Recipe(
    name="decoding",
    paper="Basu et al. 2021 (Mirostat); Meister et al. 2023 (typical sampling); Vijayakumar et al. 2018 (diverse beam search)",
    description="decoding algorithms on a hidden Markov language: Mirostat, typical vs top-p, diverse beam search",
    budgets=BUDGETS,
    claims=[
        Claim("Mirostat (eta 0.5) holds mean surprise within 0.2 bits of tau at temperatures 0.7-1.5", "Basu et al. 2021",
              metric="mirostat.max_abs_error", threshold=0.2, direction="at_most"),
        Claim("typical sampling's true per-token log-likelihood is closer to the entropy rate than top-p's at matched "
              "distinct-4 (mean advantage in bits > 0)", "Meister et al. 2023",
              metric="typical_minus_top_p.gap_advantage", threshold=1e-9),
        Claim("diverse beam search raises distinct 4-grams among the beams by >= 30% at <= 5% loss of mean "
              "log-probability", "Vijayakumar et al. 2018", metric="diverse_beam.best_gain_within_5pct", threshold=0.30),
    ],
    run=run,
    report=report,
    minutes={"smoke": 0.5, "cpu": 10.0},
))
