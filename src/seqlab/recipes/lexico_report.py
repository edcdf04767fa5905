"""report.md of the lexico recipe, from results.json alone."""

from __future__ import annotations

from typing import Any

from seqlab.recipes.markdown import results_header


def _fmt(x, spec=".3f") -> str:
    return "—" if x is None else format(x, spec)


def report(ctx, results: dict[str, Any]) -> str:
    m = results["metrics"]
    ref = results.get("reference", {})
    out = [results_header(results, "Lexico: KV-cache sparse coding over universal dictionaries"),
           f"One decoder ({m.get('n_params', 0):,} parameters, {m.get('steps')} steps, {m.get('train_seconds')} s of "
           "training) on a token-mixture of stand-in tasks and the targets. Accuracy is at the target's scored "
           "positions, the context prefilled and the queries decoded through each cache; bytes are what each cache "
           f"stores per sequence, as a share of the 16-bit full cache. Claims use N = {ref.get('atoms')} atoms and "
           f"s = {ref.get('sparsity')} where a setting is needed.\n"]
    for name, rows in results.get("grids", {}).items():
        p = f"{name}."
        out.append(f"## {name}\n")
        out.append(f"Full cache (16-bit): accuracy {_fmt(m.get(p + 'full_accuracy'))}; the model's own float32 cache "
                   f"{_fmt(m.get(p + 'float32_accuracy'))}. Prefill {m.get(p + 'prefill')} tokens, "
                   f"{_fmt(m.get(p + 'full_bytes'), ',.0f')} bytes per sequence at the end in the full cache.\n")
        out.append("| cache | accuracy | exact match | KV bytes | % of full | decode tokens/s |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: (r["method"] != "full", r["method"], r["kv_share"])):
            out.append(f"| {r['cache']} | {r['accuracy']:.3f} | {r['exact_match']:.3f} | {r['kv_bytes']:,.0f} | "
                       f"{100 * r['kv_share']:.1f}% | {_fmt(r['decode_tokens_per_s'], ',.0f')} |")
        best = m.get(p + "lexico.best_at_25pct")
        if best is not None:
            out.append(f"\nThe most accurate Lexico cache (universal, N = {ref.get('atoms')}) within 25% of the full "
                       f"bytes is {best} ({100 * m[p + 'lexico.best_share']:.1f}%): "
                       f"{100 * m[p + 'lexico.kept_at_25pct']:.1f}% of the full cache's accuracy.")
        else:
            out.append("\nNo universal Lexico cache fits within 25% of the full bytes at these settings.")
        out.append(f"SnapKV keeps every decoded token, so its smallest cache is {m.get(p + 'snapkv_smallest.cache')} at "
                   f"{100 * m.get(p + 'snapkv_smallest.share', 0):.1f}% (accuracy {_fmt(m.get(p + 'snapkv_smallest.accuracy'))}); "
                   f"the best Lexico cache within those bytes reaches {_fmt(m.get(p + 'lexico_at_snapkv_bytes'))} "
                   f"({_fmt(m.get(p + 'lexico_minus_snapkv'), '+.3f')}).")
        kivi, lex = m.get(p + "kivi2.accuracy"), m.get(p + "lexico_at_kivi2_bytes")
        verdict = ("no Lexico cache fits in its bytes" if lex is None else
                   "Lexico wins" if lex > kivi else "KIVI-2 wins" if kivi > lex else "they tie")
        out.append(f"KIVI-2 stores {100 * m.get(p + 'kivi2.share', 0):.1f}% at accuracy {_fmt(kivi)}; the best Lexico "
                   f"cache within those bytes reaches {_fmt(lex)}: {verdict}.")
        out.append(f"\nTask-specific minus universal dictionary: {_fmt(m.get(p + 'specific_minus_universal'), '+.3f')}; "
                   f"universal minus random: {_fmt(m.get(p + 'universal_minus_random'), '+.3f')}.\n")
        errs = results.get("reconstruction", {}).get(name, {})
        if errs:
            n_layers = len(next(iter(errs.values()))["keys"])
            out.append("Relative reconstruction error ||x - x̂|| / ||x|| per layer (keys / values):\n")
            out.append("| dictionary, vectors | " + " | ".join(f"layer {j}" for j in range(n_layers)) + " |")
            out.append("|---|" + "---:|" * n_layers)
            for label, e in errs.items():
                out.append(f"| {label} | " + " | ".join(f"{k:.3f} / {v:.3f}" for k, v in zip(e["keys"], e["values"])) + " |")
        out.append(f"\n![accuracy against KV bytes](plots/accuracy_by_kv_bytes_{name}.png)\n")
        out.append(f"![reconstruction error](plots/reconstruction_{name}.png)\n")
    sizes = results.get("dictionary_bytes", {})
    if sizes:
        out.append("Dictionary bytes (all layers, keys and values, fp16; shared by every request): "
                   + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + ".\n")
    return "\n".join(out)
