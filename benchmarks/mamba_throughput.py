"""Training tokens/s of seqlab's Mamba against mambapy's (its parallel scan), in one process.

    python benchmarks/mamba_throughput.py [--d-model 128] [--layers 4] [--d-state 16] [--length 256]
                                          [--batch 16] [--vocab 64] [--steps 3] [--rounds 5]
                                          [--scan chunked] [--chunk-size 16] [--threads N] [--json]

Both models are an embedding, `--layers` residual blocks x + mamba(rmsnorm(x)), a final RMSNorm and a
linear head, in float32 with the same sizes (expand 2, d_conv 4, dt_rank ceil(d_model / 16)).
mambapy's (pip install mambapy; github.com/alxndrTL/mamba.py) is its `Mamba` stack of ResidualBlocks
with `pscan=True`, the Blelloch parallel scan in PyTorch; seqlab's is `seqlab.models.mixers.mamba.Mamba`
with `--scan` (default the chunked scan) behind torch's nn.RMSNorm. A step is forward,
cross-entropy on random tokens, backward, AdamW step (torch defaults, foreach), zero_grad. Rounds
alternate which model goes first; the numbers are medians over rounds, and the ratio is the median
of each round's own ratio, so load from other processes affects both alike.

Exit codes: 0 done; 2 bad input or mambapy missing.
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

from seqlab.models.mixers.mamba import SCANS, Mamba


class SeqlabLM(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_layers: int, d_state: int, scan: str, chunk_size: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, d_model)
        self.norms = nn.ModuleList(nn.RMSNorm(d_model, eps=1e-5) for _ in range(n_layers))
        self.mixers = nn.ModuleList(Mamba(d_model, d_state=d_state, scan=scan, chunk_size=chunk_size)
                                    for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)  # (B, L, D)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return self.head(self.norm(x))


class MambapyLM(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_layers: int, d_state: int):
        super().__init__()
        from mambapy.mamba import Mamba as MambapyMamba
        from mambapy.mamba import MambaConfig

        self.emb = nn.Embedding(vocab, d_model)
        self.backbone = MambapyMamba(MambaConfig(d_model=d_model, n_layers=n_layers, d_state=d_state, pscan=True))
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.backbone(self.emb(tokens))))


def tokens_per_second(model, opt, tokens: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tokens.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * tokens.numel() / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scan", default="chunked", choices=[s for s in SCANS if s != "cuda"])
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if min(a.d_model, a.layers, a.d_state, a.length, a.batch, a.vocab, a.steps, a.rounds, a.chunk_size) < 1:
        print("sizes, steps, rounds and chunk size must be positive", file=sys.stderr)
        return 2
    try:
        import mambapy  # noqa: F401
    except ImportError:
        print("mambapy is not installed: pip install mambapy", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tokens = torch.randint(0, a.vocab, (a.batch, a.length))
    models = {"seqlab": SeqlabLM(a.vocab, a.d_model, a.layers, a.d_state, a.scan, a.chunk_size),
              "mambapy": MambapyLM(a.vocab, a.d_model, a.layers, a.d_state)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3, foreach=True) for k, m in models.items()}
    for name in models:  # warm-up
        tokens_per_second(models[name], opts[name], tokens, 1)
    rates: dict[str, list[float]] = {"seqlab": [], "mambapy": []}
    for r in range(a.rounds):
        for name in (("seqlab", "mambapy") if r % 2 == 0 else ("mambapy", "seqlab")):
            rates[name].append(tokens_per_second(models[name], opts[name], tokens, a.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    row = {"d_model": a.d_model, "layers": a.layers, "d_state": a.d_state, "length": a.length, "batch": a.batch,
           "threads": torch.get_num_threads(), "scan": a.scan, "chunk_size": a.chunk_size, "rounds": a.rounds,
           "params_seqlab": sum(p.numel() for p in models["seqlab"].parameters()),
           "params_mambapy": sum(p.numel() for p in models["mambapy"].parameters()),
           "tokens_per_s_seqlab": round(med["seqlab"], 1), "tokens_per_s_mambapy": round(med["mambapy"], 1),
           "ratio": round(statistics.median(s / m for s, m in zip(rates["seqlab"], rates["mambapy"])), 3)}
    if a.json:
        print(json.dumps(row))
    else:
        print(f"d_model {a.d_model}, {a.layers} layers, d_state {a.d_state}, batch {a.batch} x length {a.length}, "
              f"{row['threads']} threads, scan {a.scan} (chunk {a.chunk_size}); medians of {a.rounds} rounds")
        print(f"{'':>8} {'params':>9} {'tokens/s':>10}")
        for name in ("seqlab", "mambapy"):
            print(f"{name:>8} {row['params_' + name]:>9,} {row['tokens_per_s_' + name]:>10,.0f}")
        print(f"seqlab / mambapy: {row['ratio']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
