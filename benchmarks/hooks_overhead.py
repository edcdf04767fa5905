"""What empty hook points cost a training step: a Decoder with its HookPoints against the same Decoder
with every HookPoint replaced by a plain identity function, in one process.

    python benchmarks/hooks_overhead.py [--sizes 4x128x128x16,2x64x64x16] [--steps 5] [--trials 15]
                                        [--warmup 3] [--threads N] [--json]

A size is LAYERSxD_MODELxLENGTHxBATCH. A step is forward, `Decoder.loss` (cross-entropy on random tokens),
backward, torch Adam (foreach), zero_grad; both models start from the same weights and see the same
batch. Each trial times `--steps` steps of each model, alternating which goes first, so load from other
work on the machine falls on both alike; reported are the medians over trials of the time per step and
of each trial's own ratio (overhead = ratio - 1). The goal (issue #6) is at most 2%.

Step-to-step noise on a shared machine is often larger than the effect, so the script also times the
two calls themselves (an empty HookPoint and a plain function, a million each) and prints the bound
they give: hook point calls per step x extra cost per call, as a share of the step.

Exit code: 0 done; 2 bad input.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import timeit

import torch

from seqlab.models import Decoder, ModelConfig
from seqlab.models.hook_points import HookPoint, hook_points, strip_hook_points


def parse_size(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size '{text}' is not LAYERSxD_MODELxLENGTHxBATCH, e.g. 4x128x128x16")
    return tuple(map(int, parts))


class Runner:
    """One model, its Adam and a fixed batch; `run(n)` returns seconds per step over n steps."""

    def __init__(self, model: Decoder, tokens: torch.Tensor):
        self.model, self.tokens, self.targets = model, tokens, torch.roll(tokens, -1, 1)
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.samples: list[float] = []

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.model.loss(self.tokens, self.targets).backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) / n


def call_costs(number: int = 1_000_000) -> tuple[float, float]:
    """Seconds per call of an empty HookPoint and of a plain identity function (best of 5)."""
    x, point = torch.zeros(1), HookPoint()

    def plain(t):
        return t

    hook_s = min(timeit.repeat(lambda: point(x), number=number, repeat=5)) / number
    plain_s = min(timeit.repeat(lambda: plain(x), number=number, repeat=5)) / number
    return hook_s, plain_s


def measure(size, steps: int, trials: int, warmup: int, vocab: int, extra_per_call: float) -> dict:
    n_layers, d_model, length, batch = size
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=max(1, d_model // 32), max_positions=length)
    hooked = Decoder(cfg, vocab).train()
    calls = len(hook_points(hooked))  # each fires once per forward pass
    plain = strip_hook_points(copy.deepcopy(hooked))
    tokens = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    runners = {"hook points": Runner(hooked, tokens), "plain": Runner(plain, tokens)}
    for r in runners.values():
        r.run(warmup)
    ratios = []
    for t in range(trials):
        order = list(runners) if t % 2 == 0 else list(reversed(runners))
        for name in order:
            runners[name].samples.append(runners[name].run(steps))
        ratios.append(runners["hook points"].samples[-1] / runners["plain"].samples[-1])
    hooked_ms = statistics.median(runners["hook points"].samples) * 1e3
    plain_ms = statistics.median(runners["plain"].samples) * 1e3
    return {"size": "x".join(map(str, size)), "hook_points": calls, "hooked_ms": hooked_ms, "plain_ms": plain_ms,
            "overhead_pct": (statistics.median(ratios) - 1) * 100,
            "overhead_pct_of_medians": (hooked_ms / plain_ms - 1) * 100,
            "ratio_spread_pct": (max(ratios) - min(ratios)) / 2 * 100,
            "bound_pct": calls * extra_per_call / (plain_ms / 1e3) * 100}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4x128x128x16,2x64x64x16")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",")]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    hook_s, plain_s = call_costs()
    rows = [measure(s, args.steps, args.trials, args.warmup, args.vocab, max(0.0, hook_s - plain_s)) for s in sizes]
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_before": load_before,
            "load_after": os.getloadavg(), "hook_call_us": hook_s * 1e6, "plain_call_us": plain_s * 1e6,
            "trials": args.trials, "steps": args.steps}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}))
        return 0
    print(f"torch {meta['torch']}, {meta['threads']} threads, {args.trials} trials of {args.steps} steps; "
          f"load average {load_before[0]:.2f} before, {meta['load_after'][0]:.2f} after")
    print(f"one call: empty HookPoint {hook_s * 1e6:.2f} us, plain function {plain_s * 1e6:.2f} us")
    print("\n| size (layers x d x length x batch) | hook points | with hooks ms/step | plain ms/step "
          "| overhead (median ratio) | ± | bound from call cost |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['hook_points']} | {r['hooked_ms']:.2f} | {r['plain_ms']:.2f} | "
              f"{r['overhead_pct']:+.2f}% | {r['ratio_spread_pct']:.2f}% | {r['bound_pct']:.3f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
