"""Training steps/s of seqlab's in-context learner against Garg et al.'s setup, in one process.

    python benchmarks/icl_throughput.py [--sizes 64x3x2,128x4x4,256x12x8] [--dims 10] [--points 31]
                                        [--batch 64] [--steps 5] [--rounds 5] [--threads N] [--json]

Garg's model (github.com/dtsip/in-context-learning, src/models.py, TransformerModel): Hugging
Face's GPT2Model (n_positions = 2 * points, dropout 0, no cache) fed `inputs_embeds` from a linear
read-in of the interleaved x / [y, 0, ...] tokens, a linear read-out of the hidden state at the x
positions; squared error over every prefix; Adam. seqlab's is `ICLTransformer` with learned
positions, the same width, depth, heads and MLP (4x, GELU), the same data and loss. Each trains as its
own code does: Garg's step is torch Adam (defaults) without clipping (his train.py); seqlab's is the
trainer's, AdamW from `make_optimizer` (foreach) with gradient clipping at 1.0. A step is forward,
loss, backward, (clip,) optimizer step, zero_grad; data generation is excluded (both read the same
tensors). Rounds alternate the order; the numbers are medians over rounds.

Exit codes: 0 done; 2 bad input or transformers missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model, interleave
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import make_optimizer


class GargModel(nn.Module):
    """Garg et al.'s TransformerModel, as in their code: read-in, GPT2Model, read-out at x tokens."""

    def __init__(self, n_dims: int, n_points: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(n_positions=2 * n_points, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        self.read_in = nn.Linear(n_dims, d_model)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(d_model, 1)

    def loss(self, xs: torch.Tensor, ys: torch.Tensor, loops=None) -> torch.Tensor:
        h = self.backbone(inputs_embeds=self.read_in(interleave(xs, ys))).last_hidden_state
        return F.mse_loss(self.read_out(h)[:, ::2, 0], ys)


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        d_model, n_layers, n_heads = (int(v) for v in text.split("x"))
    except ValueError:
        raise SystemExit(f"--sizes expects WIDTHxLAYERSxHEADS items, got '{text}'") from None
    return d_model, n_layers, n_heads


def steps_per_second(model, opt, xs, ys, steps: int, clip: float | None = None) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(xs, ys)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64x3x2,128x4x4,256x12x8", help="WIDTHxLAYERSxHEADS, comma separated")
    ap.add_argument("--dims", type=int, default=10)
    ap.add_argument("--points", type=int, default=31)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed: pip install 'seqlab[bench]'", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    xs, ys = torch.randn(a.batch, a.points, a.dims), torch.randn(a.batch, a.points)
    rows = []
    for text in a.sizes.split(","):
        d_model, n_layers, n_heads = parse_size(text)
        ours = build_icl_model(ICLModelConfig(n_dims=a.dims, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                              max_points=a.points, position="learned"))
        garg = GargModel(a.dims, a.points, d_model, n_layers, n_heads)
        train = TrainConfig(lr=1e-4, weight_decay=0.0)
        opts = {"seqlab": make_optimizer(ours, train), "garg": torch.optim.Adam(garg.parameters(), lr=1e-4)}
        clips = {"seqlab": train.grad_clip, "garg": None}
        models = {"seqlab": ours, "garg": garg}
        for name in models:  # warm-up
            steps_per_second(models[name], opts[name], xs, ys, 2, clips[name])
        rates: dict[str, list[float]] = {"seqlab": [], "garg": []}
        for r in range(a.rounds):
            for name in (("seqlab", "garg") if r % 2 == 0 else ("garg", "seqlab")):
                rates[name].append(steps_per_second(models[name], opts[name], xs, ys, a.steps, clips[name]))
        med = {k: statistics.median(v) for k, v in rates.items()}
        rows.append({"size": text, "params_seqlab": sum(p.numel() for p in ours.parameters()),
                     "params_garg": sum(p.numel() for p in garg.parameters()),
                     "steps_per_s_seqlab": round(med["seqlab"], 2), "steps_per_s_garg": round(med["garg"], 2),
                     "ratio": round(med["seqlab"] / med["garg"], 3)})
    if a.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"d={a.dims}, {a.points} points, batch {a.batch}, {torch.get_num_threads()} threads (medians of {a.rounds} rounds)")
        print(f"{'size':>12} {'params':>10} {'seqlab st/s':>12} {'garg st/s':>10} {'ratio':>7}")
        for row in rows:
            print(f"{row['size']:>12} {row['params_seqlab']:>10,} {row['steps_per_s_seqlab']:>12} {row['steps_per_s_garg']:>10} "
                  f"{row['ratio']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
