"""Decode tokens/s and stored bytes of each KV cache against the full one, on one decoder.

    python benchmarks/kv_cache_decode.py [--layers 4] [--d-model 128] [--heads 4] [--prompt 256] [--new 64]
                                         [--batch 8] [--trials 3] [--threads N] [--json]

The model has random weights (speed does not depend on what it learned; neither do the bytes, which are
fixed by the settings), its attention made sharper than at initialisation so eviction has something to
choose. Each cache prefills the same prompt and decodes `--new` tokens greedily; the time is the decode
loop's alone, the median over `--trials`. Bytes are what every layer's cache stores at the end
(`nbytes()`), as a share of the 16-bit full cache's; Lexico's dictionaries (random here) and PCA's bases
are shared by every request and reported apart.

Exit code: 0 done; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from seqlab.kv_compression.methods import CacheSpec, make_factory
from seqlab.models import ModelConfig, build
from seqlab.models.kvcache.base import Cache
from seqlab.models.kvcache.dictionary import pca_basis, random_dictionary

SPECS = [CacheSpec(method="full"), CacheSpec(method="lexico", sparsity=4, buffer=16, label="lexico s=4 N=8m"),
         CacheSpec(method="lexico", sparsity=8, buffer=16, label="lexico s=8 N=8m"),
         CacheSpec(method="pca", buffer=16, label="pca r=6"), CacheSpec(method="kivi", bits=2, group=32, residual=32),
         CacheSpec(method="kivi", bits=4, group=32, residual=32), CacheSpec(method="snapkv", budget=64, window=16),
         CacheSpec(method="pyramidkv", budget=64, window=16), CacheSpec(method="window", window=64),
         CacheSpec(method="chai", clusters=2, label="chai k=2")]


def decode(model, prompt, new: int, factory) -> tuple[float, list]:
    B, L = prompt.shape
    caches = model.new_caches(B, L + new, "cpu", kv_cache=factory)
    logits = model(prompt, None, caches, start=0)
    nxt = logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for j in range(new):
        nxt = model(nxt, None, caches, start=L + j)[:, -1].argmax(-1, keepdim=True)
    return time.perf_counter() - t0, caches


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("layers", 4), ("d-model", 128), ("heads", 4), ("prompt", 256), ("new", 64),
                          ("batch", 8), ("trials", 3), ("threads", 0)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if min(a.layers, a.d_model, a.heads, a.prompt, a.new, a.batch, a.trials) < 1 or a.d_model % a.heads:
        print("error: sizes must be positive and d-model divisible by heads", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(ModelConfig(n_layers=a.layers, d_model=a.d_model, n_heads=a.heads, position="rope",
                              max_positions=a.prompt + a.new), 256).eval()
    hd = a.d_model // a.heads
    with torch.no_grad():
        for b in model.blocks:
            b.mixer.qkv.weight.mul_(3)
    atoms = [(random_dictionary(8 * hd, hd, 2 * i), random_dictionary(8 * hd, hd, 2 * i + 1)) for i in range(a.layers)]
    sample = torch.randn(4096, hd)
    bases = [(pca_basis(sample, 6), pca_basis(sample, 6))] * a.layers
    prompt = torch.randint(1, 256, (a.batch, a.prompt), generator=torch.Generator().manual_seed(1))
    rows = []
    full_bytes = None
    with torch.no_grad():
        own = statistics.median(decode(model, prompt, a.new, None)[0] for _ in range(a.trials))
        for spec in SPECS:
            factory = make_factory(model, spec, {"universal": atoms}, bases)
            times, caches = [], None
            for _ in range(a.trials):
                t, caches = decode(model, prompt, a.new, factory)
                times.append(t)
            layer = [c for c in caches if isinstance(c, Cache)]
            stored, shared = sum(c.nbytes() for c in layer), sum(c.shared_nbytes() for c in layer)
            full_bytes = full_bytes or stored
            sec = statistics.median(times)
            rows.append({"cache": spec.name(), "tokens_per_s": a.batch * a.new / sec, "kv_bytes": stored,
                         "kv_share": stored / full_bytes, "shared_bytes": shared})
    result = {"model": f"{a.layers} x {a.d_model}, {a.heads} heads", "prompt": a.prompt, "new": a.new,
              "batch": a.batch, "threads": torch.get_num_threads(),
              "models_own_cache_tokens_per_s": a.batch * a.new / own, "caches": rows}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']}, prompt {a.prompt}, {a.new} new tokens, batch {a.batch}, {result['threads']} threads; "
          f"the model's own float32 cache: {result['models_own_cache_tokens_per_s']:,.0f} tokens/s")
    print(f"{'cache':<22}{'tokens/s':>10}{'vs full':>9}{'KV bytes':>12}{'of full':>9}{'shared':>10}")
    base = rows[0]["tokens_per_s"]
    for r in rows:
        print(f"{r['cache']:<22}{r['tokens_per_s']:>10,.0f}{r['tokens_per_s'] / base:>8.2f}x{r['kv_bytes']:>12,}"
              f"{r['kv_share']:>8.1%}{r['shared_bytes']:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
