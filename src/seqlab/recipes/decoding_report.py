"""Plots and report.md of the decoding recipe (the report from results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqlab.eval.plots import error_by_points
from seqlab.recipes.markdown import results_header


def plot_all(folder: Path, s: dict, miro: dict, tau: float, curves: dict, entropy_rate: float, beams: dict) -> list[str]:
    temps = s["temperatures"]
    others = {f"Mirostat 2.0, eta {k[len('mirostat_eta'):]}": {"k": temps, "mean": v} for k, v in miro.items()
              if k.startswith("mirostat_eta")}
    error_by_points({f"Mirostat 2.0, eta {s['mirostat_eta']}": {"k": temps, "mean": miro["mirostat"]}, **others,
                     f"top-k, k = {s['top_k']}": {"k": temps, "mean": miro["top_k"]},
                     f"target tau = {tau:.2f}": {"k": temps, "mean": [tau] * len(temps)}},
                    folder / "surprise_by_temperature.png", title="mean surprise of the written tokens",
                    xlabel="temperature", ylabel="bits per token (model at that temperature)")
    xs = [x for c in curves.values() for x in c["distinct4"]]
    lines = {name: {"k": c["distinct4"], "mean": c["true_surprise"]} for name, c in
             (("typical", curves["typical"]), ("top-p", curves["top_p"]))}
    lines["entropy rate"] = {"k": [min(xs), max(xs)], "mean": [entropy_rate, entropy_rate]}
    error_by_points(lines, folder / "true_surprise_by_diversity.png", title="sampling at temperature 1, over the mass",
                    xlabel="distinct 4-grams over all samples", ylabel="true surprise, bits per token")
    lams = [r["diversity"] for r in beams["diverse"]]
    error_by_points({"distinct-4 gain over beam search": {"k": lams, "mean": [r["distinct_gain"] for r in beams["diverse"]]},
                     "loss of mean log-probability": {"k": lams, "mean": [r["logprob_loss"] for r in beams["diverse"]]}},
                    folder / "diverse_beams.png", title="diverse beam search against beam search",
                    xlabel="diversity penalty", ylabel="relative change", log=False)
    return ["plots/surprise_by_temperature.png", "plots/true_surprise_by_diversity.png", "plots/diverse_beams.png"]


def report(ctx, results: dict[str, Any]) -> str:
    m = results["metrics"]
    st = results.get("surprise_by_temperature", {})
    out = [results_header(results, "Decoding algorithms on a hidden Markov language"),
           f"A decoder trained {m.get('train_seconds')} s on the `hmm` task. The language's entropy rate is "
           f"{m['entropy_rate_bits']:.3f} ± {m['entropy_rate_se']:.3f} bits per token (exact conditional entropies, "
           f"averaged over sampled sequences); pure sampling from the model writes {m['pure_sampling.true_surprise']:.3f} "
           "bits per token by the true model.\n",
           "## Mirostat against top-k\n",
           f"Target tau = {m['mirostat.tau']:.3f} bits. Mean surprise of the written tokens under the model's "
           "distribution at that temperature:\n",
           "| temperature | Mirostat 2.0 | top-k |", "|---:|---:|---:|"]
    for t, a, b in zip(st.get("temperatures", []), st.get("mirostat", []), st.get("top_k", [])):
        out.append(f"| {t} | {a:.3f} | {b:.3f} |")
    out.append(f"\nMirostat's largest error (eta {m.get('mirostat.eta')}) is {m['mirostat.max_abs_error']:.3f} bits and its "
               f"range over temperatures {m['mirostat.range']:.3f}; top-k's surprise moves over {m['top_k.range']:.3f} bits.")
    for key, v in m.items():
        if key.startswith("mirostat.eta") and key.endswith(".max_abs_error"):
            eta = key[len("mirostat.eta"):-len(".max_abs_error")]
            row = ", ".join(f"{x:.3f}" for x in st.get(f"mirostat_eta{eta}", []))
            out.append(f"At eta {eta} the largest error is {v:.3f} bits (by temperature: {row}); mu starts at 2 tau and "
                       "moves by eta times the error per token.")
    out.append("")
    out.append("![surprise](plots/surprise_by_temperature.png)\n")
    out += ["## Typical against top-p\n", "| mass | typical distinct-4 | typical true surprise | top-p distinct-4 | "
            "top-p true surprise |", "|---:|---:|---:|---:|---:|"]
    tt = results.get("typical_top_p", {})
    if tt:
        for i, mass in enumerate(tt["typical"]["mass"]):
            ty, tp = tt["typical"], tt["top_p"]
            out.append(f"| {mass} | {ty['distinct4'][i]:.3f} | {ty['true_surprise'][i]:.3f} | {tp['distinct4'][i]:.3f} | "
                       f"{tp['true_surprise'][i]:.3f} |")
    out.append(f"\nAt matched distinct-4 ({m['typical_minus_top_p.matched']} of typical's settings fall in top-p's "
               f"range) typical's true surprise is closer to the entropy rate by {m['typical_minus_top_p.gap_advantage']:.4f}"
               " bits on average (negative: top-p is closer).\n")
    out.append("![true surprise](plots/true_surprise_by_diversity.png)\n")
    b = results.get("beams", {})
    out += ["## Diverse beam search\n",
            f"Beam search: distinct-4 {m['beam.distinct4']:.3f}, mean log-probability {m['beam.mean_logprob']:.3f}.\n",
            "| diversity | distinct-4 | gain | mean log-probability | loss |", "|---:|---:|---:|---:|---:|"]
    for r in b.get("diverse", []):
        out.append(f"| {r['diversity']} | {r['distinct4']:.3f} | {100 * r['distinct_gain']:+.1f}% | {r['mean_logprob']:.3f} "
                   f"| {100 * r['logprob_loss']:.1f}% |")
    out.append(f"\nThe largest gain at no more than 5% loss: {100 * m['diverse_beam.best_gain_within_5pct']:.1f}%.\n")
    out.append("![diverse beams](plots/diverse_beams.png)\n")
    return "\n".join(out)
