"""Batched greedy KV-cache decoding tokens/s of seqlab against Hugging Face `generate` on one model, in one process.

    python benchmarks/decode_throughput.py [--sizes 128] [--batches 1,8,64] [--prompt 32] [--new 64] [--rounds 3]
                                           [--warmup 1] [--threads N] [--device cpu|cuda] [--json]

One decoder (`mlp=swiglu, norm=rmsnorm, position=rope, bias=False`, random weights, eval mode, float32), its
weights put into a `transformers` LlamaForCausalLM (sdpa attention) by seqlab's export mapping, the same
mapping and builder `throughput.py` uses. Three ways decode the same batch of equal-length random prompts,
greedily, exactly `--new` tokens a row (no end token can stop them):
    seqlab generate   `Decoder.generate(prompt, prompt_pos, pos_base, N, eos=-1)`, one preallocated cache;
    seqlab engine     the serving engine's `SlotBatch` (one slot a request, per-row caches): admit, step to the end;
    HF                `LlamaForCausalLM.generate(..., do_sample=False, use_cache=True)`, its DynamicCache.

Parity first: at `--parity-batch` the three outputs must be equal token for token, or the script exits 1.
Embeddings are untied by default (`--tied` ties them; decoding costs the same): at random initialisation the
token's embedding dominates the residual stream, so a tied head scores each token highest for itself and
greedy decoding repeats the last prompt token forever, an output that cannot tell a wrong cache or position
from a right one. A random untied head gives outputs that vary from step to step.

Timing: each call is timed whole, cache allocation and prefill included, so tokens/s = batch * new / seconds of
one call. After `--warmup` untimed calls of each, `--rounds` rounds time one call of each (the order reverses
from round to round, so drifting load from other work hits all three alike); reported are medians over rounds,
and each ratio to HF is the median of the rounds' own ratios.

Exit codes: 0 done; 1 the outputs differ at the parity batch; 2 bad input or transformers missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, also when loaded from a path
import throughput  # noqa: E402  (its sizes and its Llama builder, so both benchmarks compare the same models)

from seqlab.models import ModelConfig, build  # noqa: E402
from seqlab.serve.slots import Request, SlotBatch  # noqa: E402

PRESETS = {**throughput.PRESETS, "small": throughput.Size(32, 2, 2, 64)}  # "small" keeps tests fast
NAMES = ("seqlab_generate", "seqlab_engine", "hf")


def parse_size(text: str) -> throughput.Size:
    if text in PRESETS:
        return PRESETS[text]
    try:
        return throughput.parse_size(text)
    except ValueError as e:  # name this script's presets, which include "small"
        raise ValueError(str(e).replace(", ".join(throughput.PRESETS), ", ".join(PRESETS))) from None


def build_pair(size: throughput.Size, args, device: torch.device):
    """The decoder and a Llama holding its weights, both eval mode, float32, on `device`."""
    torch.manual_seed(args.seed)
    cfg = ModelConfig(d_model=size.d_model, n_layers=size.n_layers, n_heads=size.n_heads, d_mlp=size.d_mlp,
                      mlp="swiglu", norm="rmsnorm", position="rope", bias=False, tie_embeddings=args.tied,
                      max_positions=args.prompt + args.new)
    seq = build(cfg, args.vocab).eval()
    hf = throughput.build_llama(seq, args.prompt + args.new).eval()
    from transformers import GenerationConfig

    # Greedy, never stopping early (no end token); nothing else, so generate has no defaults to warn about. The pad
    # id is outside the vocabulary, so no prompt token reads as padding; no row ends, so none is ever written.
    hf.generation_config = GenerationConfig(do_sample=False, use_cache=True, pad_token_id=args.vocab,
                                            bos_token_id=None, eos_token_id=None, max_new_tokens=args.new,
                                            min_new_tokens=args.new)
    return seq.to(device), hf.to(device)


# -- the three decoders: each maps a (B, P) prompt to its (B, N) new tokens -----------------------------------

def seqlab_generate(seq, prompt, new: int):
    B, P = prompt.shape
    pos = torch.arange(P, device=prompt.device).expand(B, P)
    return seq.generate(prompt, pos, torch.full((B,), P, device=prompt.device), new, eos=-1)


@torch.no_grad()
def seqlab_engine(seq, prompt, new: int):
    B, P = prompt.shape
    batch = SlotBatch(seq, n_slots=B, max_len=P + new)
    rows = prompt.tolist()
    out: list[list[int] | None] = [None] * B
    finished = batch.admit([(i, Request(i, rows[i], list(range(P)), P, new, -1)) for i in range(B)])
    while True:
        for slot in finished:  # a finished slot stays busy until released
            out[slot] = batch.release(slot)
        if not batch.busy():
            return torch.tensor(out, device=prompt.device)
        finished = batch.step()


def hf_generate(hf, prompt, new: int):
    out = hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                      min_new_tokens=new, do_sample=False, use_cache=True,
                      pad_token_id=hf.generation_config.pad_token_id, eos_token_id=None)
    return out[:, prompt.shape[1]:]


def random_prompt(batch: int, args, seed: int, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, args.vocab, (batch, args.prompt), generator=g).to(device)


def compare(outs: dict) -> dict:
    """Whether the three outputs are equal, and where the first difference from HF's is."""
    ref = outs["hf"]
    res = {"equal": all(torch.equal(outs[n], ref) for n in NAMES)}
    for n in NAMES[:2]:
        diff = (outs[n] != ref).nonzero()
        if len(diff):
            res[f"{n}_first_difference"] = {"row": int(diff[0, 0]), "token": int(diff[0, 1])}
    return res


def bench_size(size, args, device, log) -> dict:
    seq, hf = build_pair(size, args, device)
    run = {"seqlab_generate": partial(seqlab_generate, seq, new=args.new),
           "seqlab_engine": partial(seqlab_engine, seq, new=args.new), "hf": partial(hf_generate, hf, new=args.new)}
    prompt = random_prompt(args.parity_batch, args, args.seed + 1, device)
    with torch.no_grad():
        parity = {"batch": args.parity_batch, **compare({n: f(prompt) for n, f in run.items()})}
    log(f"  {size.name} parity at batch {args.parity_batch}: {'equal' if parity['equal'] else 'DIFFERENT'}")
    out = {"size": size.name, "params": seq.n_params(), "parity": parity, "batches": []}
    for B in args.batches:
        prompt = random_prompt(B, args, args.seed + 2, device)
        secs: dict[str, list[float]] = {n: [] for n in NAMES}
        outs = {}
        with torch.no_grad():
            for _ in range(args.warmup):
                for f in run.values():
                    f(prompt)
            for i in range(args.rounds):
                for n in NAMES if i % 2 == 0 else NAMES[::-1]:
                    throughput.sync(device)
                    t0 = time.perf_counter()
                    outs[n] = run[n](prompt)
                    throughput.sync(device)
                    secs[n].append(time.perf_counter() - t0)
                log(f"  {size.name} batch {B} round {i + 1}/{args.rounds}: "
                    + ", ".join(f"{n} {B * args.new / secs[n][-1]:,.0f} tok/s" for n in NAMES))
        row = {"batch": B, "outputs_equal": compare(outs)["equal"]}
        for n in NAMES:
            s = statistics.median(secs[n])
            row[n] = {"seconds": s, "tokens_per_s": B * args.new / s, "seconds_rounds": secs[n]}
        for n in NAMES[:2]:  # each round's own ratio cancels load that drifts between rounds
            row[f"{n}_over_hf"] = statistics.median(h / x for x, h in zip(secs[n], secs["hf"], strict=True))
        out["batches"].append(row)
    return out


# -- main ------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="128", help=f"comma-separated presets ({', '.join(PRESETS)}) or DxLxHxMLP")
    p.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes (default 1,8,64)")
    p.add_argument("--prompt", type=int, default=32, help="prompt length (default 32)")
    p.add_argument("--new", type=int, default=64, help="new tokens a row (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds; medians are over rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each decoder first, per batch size")
    p.add_argument("--parity-batch", type=int, default=4, help="batch size of the token-for-token check (default 4)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, every core)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; float32 either way")
    p.add_argument("--vocab", type=int, default=64, help="vocabulary size (default 64)")
    p.add_argument("--tied", action="store_true", help="tie the input embedding and the output head (default: untied)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def fail(msg: str) -> None:
    print(f"decode_throughput: {msg}", file=sys.stderr)
    sys.exit(2)


def check_args(args) -> tuple[list, torch.device]:
    try:
        sizes = [parse_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        fail(str(e))
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        fail(f"--batches must be comma-separated integers, not '{args.batches}'")
    if not sizes or not args.batches:
        fail("--sizes and --batches must each name at least one")
    for k in ("prompt", "new", "rounds", "parity_batch", "vocab"):
        if getattr(args, k) < 1:
            fail(f"--{k.replace('_', '-')} must be at least 1")
    if min(args.batches) < 1 or args.warmup < 0:
        fail("batch sizes must be at least 1 and --warmup at least 0")
    if args.device not in ("cpu", "cuda"):
        fail(f"device '{args.device}' is not supported (use cpu or cuda)")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda asked for, but torch sees no CUDA device")
    if args.threads is not None and args.threads < 1:
        fail("--threads must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return sizes, torch.device(args.device)


def print_table(result: dict) -> None:
    env = result["env"]
    print(f"greedy decoding, prompt {env['prompt']} + {env['new']} new tokens, vocab {env['vocab']}, {env['device']} "
          f"float32, torch {env['torch']} ({env['threads']} threads), transformers {env['transformers']}; "
          f"median of {env['rounds']} rounds; tok/s = batch * new / whole call (prefill included)")
    head = ("size", "batch", "generate tok/s", "engine tok/s", "HF tok/s", "generate/HF", "engine/HF", "equal")
    print("".join(f"{h:>15}" for h in head))
    for r in result["sizes"]:
        for b in r["batches"]:
            cells = (r["size"], b["batch"], *(f"{b[n]['tokens_per_s']:,.0f}" for n in NAMES),
                     f"{b['seqlab_generate_over_hf']:.2f}x", f"{b['seqlab_engine_over_hf']:.2f}x",
                     "yes" if b["outputs_equal"] else "no")
            print("".join(f"{c:>15}" for c in cells))
        p = r["parity"]
        print(f"parity {r['size']} at batch {p['batch']}: generate, engine and HF outputs "
              f"{'equal token for token' if p['equal'] else 'DIFFER: ' + json.dumps(p)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes, device = check_args(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only: nothing is ever downloaded
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError:
        fail("transformers is not installed; install the benchmark extra: pip install -e '.[bench]'")
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else (lambda msg: None)
    result = {"env": {"device": str(device), "dtype": "float32", "torch": torch.__version__,
                      "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                      "prompt": args.prompt, "new": args.new, "vocab": args.vocab, "tied": args.tied,
                      "rounds": args.rounds, "warmup": args.warmup}}
    if device.type == "cuda":
        result["env"]["gpu"] = torch.cuda.get_device_name(device)
    result["sizes"] = [bench_size(s, args, device, log) for s in sizes]
    result["parity_ok"] = all(r["parity"]["equal"] for r in result["sizes"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if not result["parity_ok"]:
        print("decode_throughput: parity failed: greedy outputs differ on the same weights", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
