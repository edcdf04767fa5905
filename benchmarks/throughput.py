"""Training throughput of seqlab's decoder against Hugging Face's LlamaForCausalLM, in one process.

    python benchmarks/throughput.py [--sizes 384,128] [--steps 3] [--rounds 5] [--threads N]
                                    [--device cpu|cuda] [--untied] [--compile] [--check-parity] [--json]

One training step is forward, cross-entropy loss, backward, AdamW step (torch AdamW, foreach, the
parameter groups of `seqlab.train.trainer.make_optimizer`) and zero_grad; no gradient clipping.
Both models get the same sizes, vocabulary (64 tokens by default), batch, sequence length, dtype
(float32 on CPU; bf16 autocast on CUDA), tied or untied embeddings, the same weights (seqlab's,
copied into the Llama) and the same batch; the Llama runs sdpa attention and its loss is computed
outside the model exactly as seqlab's `Decoder.loss` computes it, so only the models differ.

Timing: after warm-up, each round times `--steps` steps of each model (the order alternates from
round to round) and one large matmul, so load from other work on the machine hits all of them
alike; the reported numbers are medians over rounds.

Model FLOPs per training step (the PaLM convention, Chowdhery et al. 2022, appendix B):
    6 * N * tokens  +  12 * n_layers * d_model * seq_len * tokens
N counts the parameters that take part in matmuls: every parameter except the input embedding
table (with tied embeddings the shared matrix is counted once, as the output head). The second
term is attention's scores and weighted sum, forward and backward, counted over the full L x L
square (the causal half that SDPA may skip still counts, as in PaLM). MFU = model FLOPs / s
divided by the peak the script measures itself: square matmuls (float32 on CPU using all the
threads torch uses; bf16 on CUDA).

Exit codes: 0 done; 1 the parity check failed; 2 bad input or transformers missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from seqlab.models import Decoder, ModelConfig
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import make_optimizer


@dataclass(frozen=True)
class Size:
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int

    @property
    def name(self) -> str:
        return f"{self.d_model}x{self.n_layers}x{self.n_heads}x{self.d_mlp}"


PRESETS = {"384": Size(384, 6, 6, 1536), "128": Size(128, 4, 4, 512)}


def parse_size(text: str) -> Size:
    """A preset (384, 128) or D_MODELxLAYERSxHEADSxD_MLP, e.g. 256x4x4x1024."""
    if text in PRESETS:
        return PRESETS[text]
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size '{text}' is neither a preset ({', '.join(PRESETS)}) nor D_MODELxLAYERSxHEADSxD_MLP")
    size = Size(*map(int, parts))
    if size.d_model % size.n_heads or (size.d_model // size.n_heads) % 2:
        raise ValueError(f"size '{text}': d_model must split into heads of even dimension")
    return size


# -- the two models ------------------------------------------------------------------------------

def build_seqlab(size: Size, vocab: int, tied: bool) -> Decoder:
    cfg = ModelConfig(d_model=size.d_model, n_layers=size.n_layers, n_heads=size.n_heads, d_mlp=size.d_mlp,
                      mlp="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=tied)
    return Decoder(cfg, vocab)


def build_llama(seq: Decoder, seq_len: int):
    """A LlamaForCausalLM holding `seq`'s weights, through seqlab's own export mapping (seqlab.export.hf)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from seqlab.export.hf import llama_config, llama_state_dict

    spec = llama_config(seq.config, seq.vocab_size, max(seq_len, 128))
    model = LlamaForCausalLM(LlamaConfig.from_dict({**spec, "use_cache": False}, attn_implementation="sdpa"))
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers picked attention '{model.config._attn_implementation}', not sdpa")
    tied = seq.config.tie_embeddings
    if tied != (model.lm_head.weight is model.model.embed_tokens.weight):
        raise RuntimeError("transformers did not honour tie_word_embeddings")
    missing, unexpected = model.load_state_dict(llama_state_dict(seq), strict=False)
    if unexpected or set(missing) - ({"lm_head.weight"} if tied else set()):
        raise RuntimeError(f"weights do not fit the Llama (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def seqlab_loss(model: Decoder):
    return model.loss


def llama_loss(model):
    def loss(tokens, targets):  # the same loss as Decoder.loss, computed outside the model
        logits = model(input_ids=tokens, use_cache=False).logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-100)

    return loss


# -- FLOPs and peak ------------------------------------------------------------------------------

def matmul_params(model: Decoder) -> int:
    """Parameters that take part in matmuls: all but the input embedding table (counted once if tied)."""
    n = sum(p.numel() for p in model.parameters())
    return n if model.config.tie_embeddings else n - model.tok_emb.weight.numel()


def flops_per_step(model: Decoder, batch: int, seq_len: int) -> float:
    tokens = batch * seq_len
    c = model.config
    return 6 * matmul_params(model) * tokens + 12 * c.n_layers * c.d_model * seq_len * tokens


class Peak:
    """Square matmuls on the benchmark's device and dtype, timed between the model rounds."""

    def __init__(self, device: torch.device, n: int, reps: int):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.device, self.n, self.reps = device, n, reps
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device, dtype)
        self.b = torch.randn(n, n, generator=g).to(device, dtype)
        self.samples: list[float] = []
        self.measure(record=False)  # warm-up

    def measure(self, record: bool = True) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.reps):
            torch.mm(self.a, self.b)
        sync(self.device)
        if record:
            self.samples.append(2 * self.n**3 * self.reps / (time.perf_counter() - t0))


# -- timing --------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One model, its optimizer and a fixed batch; `run(n)` times n training steps."""

    def __init__(self, name, model, loss_fn, tokens, targets, device):
        self.name, self.model, self.loss_fn = name, model, loss_fn
        self.tokens, self.targets, self.device = tokens, targets, device
        self.opt = make_optimizer(model, TrainConfig())  # torch AdamW, foreach, decay on matrices only
        self.samples: list[float] = []  # seconds per step, one per round

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> None:
        with self._autocast():
            loss = self.loss_fn(self.tokens, self.targets)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def run(self, n: int, record: bool = True) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        if record:
            self.samples.append((time.perf_counter() - t0) / n)


def build_pair(size: Size, args, device: torch.device):
    """seqlab's decoder and a Llama with the same sizes, holding the same weights."""
    torch.manual_seed(args.seed)
    tied = not args.untied
    seq = build_seqlab(size, args.vocab, tied)
    hf = build_llama(seq, args.seq_len)
    return seq.to(device), hf.to(device)


def bench_size(size: Size, args, device: torch.device, peak: Peak, log) -> dict:
    seq, hf = build_pair(size, args, device)
    seq.train(), hf.train()
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    data = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=g).to(device)
    tokens, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    wrap = torch.compile if args.compile else (lambda f: f)
    runners = [Runner("seqlab", seq, wrap(seqlab_loss(seq)), tokens, targets, device),
               Runner("hf", hf, wrap(llama_loss(hf)), tokens, targets, device)]
    for r in runners:
        r.run(args.warmup, record=False)
    for i in range(args.rounds):
        for r in runners if i % 2 == 0 else runners[::-1]:
            r.run(args.steps)
        peak.measure()
        log(f"  {size.name} round {i + 1}/{args.rounds}: "
            + ", ".join(f"{r.name} {1e3 * r.samples[-1]:.0f} ms/step" for r in runners))

    n_tok = args.batch * args.seq_len
    flops = flops_per_step(seq, args.batch, args.seq_len)
    out = {"size": size.name, **asdict(size), "params": seq.n_params(), "matmul_params": matmul_params(seq),
           "hf_params": sum(p.numel() for p in hf.parameters()), "flops_per_step": flops}
    for r in runners:
        s = statistics.median(r.samples)
        out[r.name] = {"ms_per_step": 1e3 * s, "tokens_per_s": n_tok / s, "model_gflops_per_s": flops / s / 1e9,
                       "tokens_per_s_rounds": [n_tok / x for x in r.samples]}
    out["ratio_seqlab_over_hf"] = out["seqlab"]["tokens_per_s"] / out["hf"]["tokens_per_s"]  # of the medians
    # Each round's own ratio cancels load that drifts between rounds; their median is the headline.
    a, b = runners[0].samples, runners[1].samples
    out["ratio_paired_median"] = statistics.median(y / x for x, y in zip(a, b, strict=True))
    return out


# -- parity --------------------------------------------------------------------------------------

def check_parity(size: Size, args, device: torch.device) -> dict:
    """Same weights, same tokens, float32, eval mode: logits, loss and embedding gradient."""
    seq, hf = build_pair(size, args, device)
    seq.eval(), hf.eval()
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    data = torch.randint(0, args.vocab, (4, args.seq_len + 1), generator=g).to(device)
    tokens, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    a = seq(tokens)
    b = hf(input_ids=tokens, use_cache=False).logits
    la, lb = seqlab_loss(seq)(tokens, targets), llama_loss(hf)(tokens, targets)
    la.backward(), lb.backward()
    ga, gb = seq.tok_emb.weight.grad, hf.model.embed_tokens.weight.grad
    diff = (a - b).abs().max().item()
    return {"size": size.name, "logits_max_abs_diff": diff, "logits_max_abs": a.abs().max().item(),
            "loss_abs_diff": (la - lb).abs().item(), "emb_grad_max_abs_diff": (ga - gb).abs().max().item(),
            "ok": diff <= args.parity_tol}


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="384,128", help="comma-separated presets (384, 128) or DxLAYERSxHEADSxMLP")
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round (default 3)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; medians are over rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, every core)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (bf16 autocast for both models)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--vocab", type=int, default=64, help="vocabulary size of both models (default 64)")
    p.add_argument("--untied", action="store_true", help="untied input embedding and output head (default: tied)")
    p.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 2048 cpu, 8192 cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models' loss (as train.compile=true does)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-parity", action="store_true", help="first compare the two models' logits on the same weights")
    p.add_argument("--parity-tol", type=float, default=1e-4, help="max abs logit difference the check accepts")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def fail(msg: str) -> None:
    print(f"throughput: {msg}", file=sys.stderr)
    sys.exit(2)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    env = result["env"]
    t = Table(title=f"training throughput, seqlab vs transformers LlamaForCausalLM ({env['device']}, {env['dtype']})")
    for col in ("size DxLxHxF", "params", "seqlab tok/s", "HF tok/s", "seqlab / HF", "seqlab ms/step",
                "HF ms/step", "seqlab GFLOP/s", "seqlab MFU", "HF MFU"):
        t.add_column(col, justify="right")
    def spread(x):  # half the min-max range over rounds, in % of the median
        return f" ±{50 * (max(x['tokens_per_s_rounds']) - min(x['tokens_per_s_rounds'])) / x['tokens_per_s']:.0f}%"

    for r in result["sizes"]:
        s, h = r["seqlab"], r["hf"]
        t.add_row(r["size"], f"{r['params'] / 1e6:.2f}M", f"{s['tokens_per_s']:,.0f}{spread(s)}",
                  f"{h['tokens_per_s']:,.0f}{spread(h)}", f"{r['ratio_paired_median']:.3f}",
                  f"{s['ms_per_step']:.1f}", f"{h['ms_per_step']:.1f}", f"{s['model_gflops_per_s']:.1f}",
                  f"{100 * s['mfu']:.1f}%", f"{100 * h['mfu']:.1f}%")
    c = Console(width=None if sys.stdout.isatty() else 132)  # a log file gets the whole table
    c.print(t)
    pk = result["peak"]
    c.print(f"peak: {pk['n']}x{pk['n']} {pk['dtype']} matmul, median {pk['gflops_per_s']:.1f} GFLOP/s "
            f"(best {pk['best_gflops_per_s']:.1f}) over {len(pk['rounds'])} samples; MFU uses the median")
    c.print(f"batch {env['batch']} x seq {env['seq_len']}, vocab {env['vocab']}, "
            f"{'tied' if env['tied'] else 'untied'} embeddings, torch {env['torch']} ({env['threads']} threads), "
            f"transformers {env['transformers']}, {'torch.compile, ' if env['compile'] else ''}"
            f"median of {env['rounds']} rounds x {env['steps']} steps; "
            "± is half the min-max range over rounds; seqlab / HF is the median of the rounds' own ratios")
    c.print("model FLOPs/step = 6 * N * tokens + 12 * n_layers * d_model * seq_len * tokens "
            "(N: params in matmuls, i.e. all but the input embedding table)")
    for p in result.get("parity", []):
        c.print(f"parity {p['size']}: logits max |diff| {p['logits_max_abs_diff']:.2e} (max |logit| "
                f"{p['logits_max_abs']:.2f}), loss |diff| {p['loss_abs_diff']:.2e}, "
                f"embedding grad max |diff| {p['emb_grad_max_abs_diff']:.2e} -> {'ok' if p['ok'] else 'MISMATCH'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only: nothing is ever downloaded
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError:
        fail("transformers is not installed; install the benchmark extra: pip install -e '.[bench]'")
    try:
        sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        fail(str(e))
    if not sizes:
        fail("--sizes names no size")
    for k in ("steps", "rounds", "batch", "seq_len", "vocab"):
        if getattr(args, k) < 1:
            fail(f"--{k.replace('_', '-')} must be at least 1")
    if args.warmup < (1 if args.compile else 0):
        fail("--warmup must be >= 0 (>= 1 with --compile, whose first step compiles)")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        fail(f"unknown device '{args.device}' (use cpu or cuda)")
    if device.type not in ("cpu", "cuda"):
        fail(f"device '{args.device}' is not supported (use cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda asked for, but torch sees no CUDA device")
    if args.threads is not None:
        if args.threads < 1:
            fail("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else (lambda msg: None)

    result = {"env": {"device": str(device), "dtype": "bf16 autocast" if device.type == "cuda" else "float32",
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "threads": torch.get_num_threads(), "batch": args.batch, "seq_len": args.seq_len,
                      "vocab": args.vocab, "tied": not args.untied, "steps": args.steps, "rounds": args.rounds,
                      "warmup": args.warmup, "compile": args.compile}}
    if device.type == "cuda":
        result["env"]["gpu"] = torch.cuda.get_device_name(device)
    if args.check_parity:
        result["parity"] = [check_parity(s, args, device) for s in sizes]

    n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    peak = Peak(device, n, reps=10 if device.type == "cuda" else 2)
    result["sizes"] = [bench_size(s, args, device, peak, log) for s in sizes]
    peak_flops = statistics.median(peak.samples)
    result["peak"] = {"n": n, "dtype": "bf16" if device.type == "cuda" else "float32",
                      "gflops_per_s": peak_flops / 1e9, "best_gflops_per_s": max(peak.samples) / 1e9,
                      "rounds": [x / 1e9 for x in peak.samples]}
    for r in result["sizes"]:
        for name in ("seqlab", "hf"):
            r[name]["mfu"] = r[name]["model_gflops_per_s"] * 1e9 / peak_flops

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if args.check_parity and not all(p["ok"] for p in result["parity"]):
        print("throughput: parity check failed: the two models disagree on the same weights", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
