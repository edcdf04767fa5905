"""Plots and report.md of the multi-bin-batching recipe (the report from results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqlab.eval.plots import error_by_points
from seqlab.recipes.markdown import results_header

LAWS = {"uniform": "uniform lengths", "long_tail": "long-tailed lengths"}


def _bins_curve(table: dict, bins: list[int], predictor: str) -> dict:
    ys = [table["static"]["requests_per_s"] if k == 1 else table[f"bins={k} {predictor}"]["requests_per_s"] for k in bins]
    return {"k": bins, "mean": ys}


def plot_all(folder: Path, s: dict, laws: dict) -> list[str]:
    out = []
    for law, r in laws.items():
        bins = s["bins"]
        curves = {f"simulated, {p}": _bins_curve(r["sim"], bins, p) for p in ("oracle", "learned")}
        curves |= {f"real engine, {p}": _bins_curve(r["real"], bins, p) for p in ("oracle", "learned")}
        for where in ("sim", "real"):
            c = r[where]["continuous"]["requests_per_s"]
            curves[f"continuous ({'simulated' if where == 'sim' else 'real'})"] = {"k": bins, "mean": [c] * len(bins)}
        error_by_points(curves, folder / f"throughput_{law}.png", title=f"saturated throughput, {LAWS[law]}",
                        xlabel="bins k (1 = static batching)", ylabel="requests per second")
        noise = r["noise"]["gain_by_sigma"]
        sig = [float(x) for x in noise]
        error_by_points({f"{r['noise']['bins']} bins over static": {"k": sig, "mean": list(noise.values())}},
                        folder / f"noise_{law}.png", title=f"gain against predictor noise, {LAWS[law]} (simulated)",
                        xlabel="sigma of the multiplicative noise exp(sigma N(0, 1))", ylabel="throughput gain - 1")
        shares = s["rate_shares"]
        lat = {key: {"k": shares, "mean": [v[str(x)]["latency_mean"] for x in shares]} for key, v in r["latency"].items()
               if "learned" not in key and "noisy" not in key}
        error_by_points(lat, folder / f"latency_{law}.png", title=f"mean latency, {LAWS[law]} (simulated, oracle)",
                        xlabel="arrival rate / continuous batching's capacity", ylabel="seconds", log=True)
        out += [f"plots/throughput_{law}.png", f"plots/noise_{law}.png", f"plots/latency_{law}.png"]
    return out


def report(ctx, results: dict[str, Any]) -> str:
    m = results["metrics"]
    sv = results.get("service_model", {})
    cf = results.get("closed_form", {})
    out = [results_header(results, "Multi-bin batching against static and continuous batching"),
           f"A decoder trained {m.get('train_seconds')} s on `copy` (exact match {m.get('final_exact_match')}); each "
           "request's output is as long as its prompt. Throughput is saturated (every request waiting at time 0); a real "
           f"throughput is the median of {results.get('real_repeats', 'a few')} timed runs.\n",
           "## Service-time model (fitted to the real engine on this machine)\n",
           f"step(B, T) = {sv.get('s0', 0):.2e} + {sv.get('s1', 0):.2e} B + {sv.get('s2', 0):.2e} B T s; prefill(n, L) = "
           f"{sv.get('p0', 0):.2e} + {sv.get('p1', 0):.2e} n L s. Mean relative error on its measurements: "
           f"{m['service.step_mean_error']:.1%}.\n",
           "## Closed forms (the paper's unit-time model)\n",
           f"One bin: simulated mean batch time {cf.get('one_bin.simulated', float('nan')):.3f} against "
           f"{cf.get('one_bin.closed_form', float('nan')):.3f} (error {m['closed_form.one_bin_relative_error']:.2%}); "
           f"k bins' throughput: largest error {m['closed_form.max_multi_bin_relative_error']:.2%}.\n"]
    for law, r in results.get("laws", {}).items():
        out += [f"## {LAWS[law].capitalize()} (mean output {r['mean_length']:.1f} tokens)\n",
                "| scheduler | simulated req/s | real req/s | real mean latency s | real p95 s |", "|---|---:|---:|---:|---:|"]
        for key, v in r["sim"].items():
            real = r["real"].get(key)
            cells = (f"{real['requests_per_s']:.2f} | {real['latency_mean']:.2f} | {real['latency_p95']:.2f}"
                     if real else "— | — | —")
            out.append(f"| {key} | {v['requests_per_s']:.2f} | {cells} |")
        n = r["noise"]
        out.append(f"\nNoise: {n['bins']} bins' gain over static by sigma "
                   + ", ".join(f"{x}: {g:+.1%}" for x, g in n["gain_by_sigma"].items())
                   + f"; below 5% from sigma = {n['sigma_below_5pct']}. Learned predictor's relative error on its fit "
                   f"set: {r['learned_fit']['train_relative_error']:.1%}.\n")
        shares = list(next(iter(r["real_latency"].values()), {}))
        out += [f"Latency under Poisson arrivals at shares of continuous batching's simulated capacity "
                f"({r['capacity']:.1f} requests/s): real engine mean / p95, then the simulator's mean, in seconds:\n",
                "| scheduler | " + " | ".join(f"{x}: real mean / p95 | {x}: simulated" for x in shares) + " |",
                "|---|" + "---:|---:|" * len(shares)]
        for key, by_share in r["real_latency"].items():
            cells = [f"{v['latency_mean']:.3f} / {v['latency_p95']:.3f} | {r['latency'][key][x]['latency_mean']:.3f}"
                     for x, v in by_share.items()]
            out.append(f"| {key} | " + " | ".join(cells) + " |")
        out.append(f"\n![throughput](plots/throughput_{law}.png)\n![noise](plots/noise_{law}.png)\n"
                   f"![latency](plots/latency_{law}.png)\n")
    out.append(f"Every real run's outputs equal the continuous run's: {'yes' if m['all_schedulers_exact'] else 'NO'}.\n")
    return "\n".join(out)
