"""Export a trained decoder run as a Hugging Face `transformers` Llama model directory.

    seqlab export RUN_DIR --to hf OUT_DIR

OUT_DIR gets `config.json` (a LlamaConfig), `model.safetensors` (float32, Llama's parameter names) and
`seqlab_export.json` (the source run, its checkpoint step, seqlab's version, and what each token id
means: seqlab has no Hugging Face tokenizer, so none is written). `LlamaForCausalLM.from_pretrained(OUT_DIR)`
then gives seqlab's logits (tests/test_export_hf.py: max |difference| <= 1e-4 in float32), so tools that
read transformers' Llama directories (nnsight, vLLM, TransformerLens) can load seqlab models; only
transformers itself is tested here. Writing needs no `transformers`: the config is plain JSON, and
`transformers` (the `hf` extra) is needed only to load the result.

What Llama can express, and so what exports: `model.arch=decoder`, every layer `attention`,
`mlp=swiglu`, `norm=rmsnorm`, `position=rope` or `none`, no `canon`, no `log_length_scale`; `bias` either
way (Llama's `attention_bias` and `mlp_bias`), tied or untied embeddings (`tie_word_embeddings`).
Dropout acts in training only, so it does not matter. Anything else is refused with the setting to train
with instead. Text-task and token-task runs export; in-context (vector prompt) runs do not: their models
read vectors, not token ids.

The mapping (seqlab -> Llama): `qkv` rows [q; k; v], heads contiguous in each, -> q/k/v_proj; SwiGLU's
`up` rows [gate; up] -> gate_proj, up_proj; `down` -> down_proj; norm1/norm2 -> input_layernorm /
post_attention_layernorm (both RMSNorm with seqlab's eps, 1e-6); `tok_emb` -> embed_tokens; `head` ->
lm_head (left out when tied: transformers ties it on load). seqlab's RoPE is Llama's layout (rotate_half,
inv_freq = base^(-2i/d)) at positions 0, 1, 2, ..., which is what Llama uses when no position ids are given.

NoPE (`position=none`): Llama always rotates queries and keys, so the export switches the rotation off
numerically: RoPE type "llama3" with `original_max_position_embeddings=1` and `low_freq_factor=1`
divides every frequency by `factor` = NOPE_FACTOR = 1e30 (each wavelength, >= 2*pi, is above the
threshold of 1). Token p's angles are then at most p * 1e-30 radians: cos rounds to exactly 1 in
float32 (it would for any angle below 2.4e-4) and the sine term changes a query or key component by at
most |q| * p * 1e-30, below float32's resolution for any real sequence length, so the logits are a
NoPE model's to float32 rounding (measured on CPU, float32, transformers 4.57.1 and 5.24.0: max |logit
difference| 0.0 for NoPE exports, as for RoPE ones; the test allows 1e-4). Why
"llama3" and not "linear" scaling by the same factor: vLLM builds a linear-scaled cos/sin table of
max_position_embeddings * factor rows, which no machine can hold, while its llama3 table has
max_position_embeddings rows. RoPE type "llama3" needs transformers >= 4.43; older ones know only linear
and dynamic scaling and reject the config rather than load it wrongly.

`max_position_embeddings` is nominal (RoPE and NoPE have no position table): `model.max_positions`, or a
token task's sequence length where that is longer. vLLM caps the context at it; edit it freely.

OUT_DIR may be missing, empty, or a previous export, which is replaced: a folder whose `seqlab_export.json`
reads back as an export's note and lists the files it wrote (`files`), and that holds those files and
nothing else. Anything else is refused, so a user's own files are never deleted, as is an OUT_DIR inside the
run directory or holding it. The export is written to a temporary folder beside OUT_DIR and renamed into
place (seqlab.core.io's atomic writes, a folder at a time), so an interrupted export never leaves a
half-written OUT_DIR; an export killed between its two renames leaves the previous export beside OUT_DIR,
and the next export puts it back before it begins (and clears what killed exports left). The run
directory is only read.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from seqlab.core.version import __version__
from seqlab.core.errors import BadInput
from seqlab.core.io import read_json, write_json
from seqlab.core.lock import LOCK_NAME
from seqlab.models import ModelConfig

EXPORT_NOTE = "seqlab_export.json"  # marks a folder as a seqlab export (so a new export may replace it)
EXPORT_KIND = "hf: transformers LlamaForCausalLM"  # the note's "export"
SIBLING_STEM = 64  # characters of OUT_DIR's name in the temporary folders beside it (names have a limit)
NOPE_FACTOR = 1e30
# The RoPE parameters that make Llama's rotation the identity to float32 rounding (see the docstring).
NOPE_ROPE = {"rope_type": "llama3", "factor": NOPE_FACTOR, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
             "original_max_position_embeddings": 1}


# -- what Llama can express ---------------------------------------------------------------------
def llama_problem(c: ModelConfig) -> str | None:
    """The first setting of `c` that a Llama cannot express, as one line with what to train instead."""
    if c.arch != "decoder":
        return (f"model.arch={c.arch}: Llama is a causal decoder, and an encoder-only model re-reads each prefix "
                "in both directions; train with model.arch=decoder")
    other = sorted(set(c.layer_mixers()) - {"attention"})
    if other:
        return f"model.mixers={c.mixers}: every Llama layer is full softmax attention; train with model.mixers=attention"
    if c.mlp != "swiglu":
        return f"model.mlp={c.mlp}: Llama's MLP is SwiGLU; train with model.mlp=swiglu"
    if c.norm != "rmsnorm":
        return f"model.norm={c.norm}: Llama uses RMSNorm; train with model.norm=rmsnorm"
    if c.position not in ("rope", "none"):
        return f"model.position={c.position}: Llama has rotary positions only; train with model.position=rope or none"
    if c.canon:
        return f"model.canon={c.canon}: Llama has no convolution before its layers; train with model.canon=0"
    if c.log_length_scale:
        return ("model.log_length_scale=true: Llama's attention has no length-dependent logit scale; "
                "train with model.log_length_scale=false")
    return None


def check_llama_expressible(c: ModelConfig) -> None:
    problem = llama_problem(c)
    if problem:
        raise BadInput(f"cannot export to hf: {problem}")


# -- the mapping --------------------------------------------------------------------------------
def llama_config(c: ModelConfig, vocab_size: int, max_positions: int, rms_eps: float = 1e-6,
                 special_ids: dict[str, int | None] | None = None) -> dict[str, Any]:
    """config.json of the Llama that computes what a seqlab decoder of config `c` computes.

    Both generations of transformers read it: 4.x reads `rope_theta` and `rope_scaling`, 5.x reads
    `rope_parameters` (and lets `rope_scaling` override it, so the two must agree, as they do here)."""
    check_llama_expressible(c)
    scaling = dict(NOPE_ROPE) if c.position == "none" else None
    head_dim = c.d_model // c.n_heads
    ids = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **(special_ids or {})}
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab_size, "hidden_size": c.d_model, "intermediate_size": c.hidden,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_heads,
        "head_dim": head_dim, "hidden_act": "silu", "max_position_embeddings": max_positions,
        "rms_norm_eps": rms_eps, "rope_theta": c.rope_base, "rope_scaling": scaling,
        "rope_parameters": {"rope_theta": c.rope_base, **(scaling or {"rope_type": "default"})},
        "attention_bias": c.bias, "mlp_bias": c.bias, "attention_dropout": 0.0,  # dropout is training-only
        "tie_word_embeddings": c.tie_embeddings, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "torch_dtype": "float32", **ids,
    }


@torch.no_grad()
def llama_state_dict(model) -> dict[str, torch.Tensor]:
    """A seqlab Decoder's weights under Llama's names, as separate contiguous tensors (safetensors
    refuses tensors that share memory). Every weight of the decoder is placed or this refuses."""
    c = model.config
    check_llama_expressible(c)
    src = {k: v.detach() for k, v in model.state_dict().items()}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return src[name]

    d, hidden = c.d_model, c.hidden
    out = {"model.embed_tokens.weight": take("tok_emb.weight"), "model.norm.weight": take("norm.weight")}
    for i in range(c.n_layers):
        a, b = f"blocks.{i}.", f"model.layers.{i}."
        params = ("weight", "bias") if c.bias else ("weight",)
        for p in params:
            for name, part in zip(("q", "k", "v"), take(f"{a}mixer.qkv.{p}").split(d, dim=0), strict=True):
                out[f"{b}self_attn.{name}_proj.{p}"] = part
            out[f"{b}self_attn.o_proj.{p}"] = take(f"{a}mixer.proj.{p}")
            gate, up = take(f"{a}mlp.up.{p}").split(hidden, dim=0)
            out[f"{b}mlp.gate_proj.{p}"], out[f"{b}mlp.up_proj.{p}"] = gate, up
            out[f"{b}mlp.down_proj.{p}"] = take(f"{a}mlp.down.{p}")
        out[f"{b}input_layernorm.weight"] = take(f"{a}norm1.weight")
        out[f"{b}post_attention_layernorm.weight"] = take(f"{a}norm2.weight")
    if c.tie_embeddings:
        used.add("head.weight")  # the same tensor as tok_emb.weight
    else:
        out["lm_head.weight"] = take("head.weight")
    left = sorted(set(src) - used)
    if left:
        raise BadInput(f"cannot export to hf: weights with no place in a Llama: {', '.join(left[:3])}")
    return {k: v.clone().contiguous() for k, v in out.items()}


# -- runs ---------------------------------------------------------------------------------------
def _exportable(run_dir: Path):
    """The run's config, checked for a Llama before any weights are read (one line for a folder that is not
    a run, or a run whose model reads no tokens)."""
    from seqlab.runs import get_kind, read_config, stored_kind
    from seqlab.runs.directory import article
    from seqlab.runs.kind import DEFAULT_KIND

    if not run_dir.exists():
        raise BadInput(f"{run_dir} does not exist")
    kind = stored_kind(run_dir) or get_kind(DEFAULT_KIND)  # no config.json: read_config says so
    if not kind.reads_tokens:
        raise BadInput(f"cannot export to hf: {run_dir} is {article(kind.title)} run, whose model reads vectors, "
                       "not token ids; export a text-task or token-task decoder run")
    config = read_config(run_dir, kind)
    check_llama_expressible(config.model)
    return config


def _check_out_dir(out: Path, run_dir: Path) -> None:
    """Refuse an OUT_DIR that is not a directory, holds something other than a previous export, or
    overlaps the run directory (replacing it would delete the run)."""
    from seqlab.runs.directory import check_writable

    o, r = out.resolve(), run_dir.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise BadInput(f"{out} overlaps the run directory {run_dir}; export to a folder outside it")
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory; choose a new OUT_DIR")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        problem = previous_export_problem(out)
        if problem:
            raise BadInput(f"{out} exists, is not empty and is not a seqlab export ({problem}); choose a new OUT_DIR")
    check_writable(out)


def previous_export_problem(out: Path) -> str | None:
    """Why `out` is not verifiably an earlier export (None where it is): its note must read back as an
    export's note listing the files it wrote, and the folder must hold those files and nothing else, so
    replacing it deletes nothing of the user's."""
    try:
        note = read_json(out / EXPORT_NOTE)
    except FileNotFoundError:
        return f"no {EXPORT_NOTE}"
    except (OSError, ValueError):
        return f"{EXPORT_NOTE} is unreadable"
    files = note.get("files") if isinstance(note, dict) else None
    if not isinstance(note, dict) or note.get("export") != EXPORT_KIND or not isinstance(files, list) \
            or not all(isinstance(f, str) and f and f == Path(f).name and not f.startswith(".") for f in files):
        return f"{EXPORT_NOTE} is not an export's note"
    listed = {*files, EXPORT_NOTE}
    for p in out.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.name not in listed:
            return f"it holds {p.name}, which no export wrote"
        if p.is_symlink() or not p.is_file():
            return f"{p.name} is not a plain file"
    return None


def _sibling(out: Path, tag: str) -> Path:
    """A new folder beside `out`. Made with mkdir, not tempfile.mkdtemp, so it gets the umask's
    permissions (mkdtemp's are 0700): an export is for other programs, maybe other users, to read."""
    path = out.parent / f".{out.name[:SIBLING_STEM]}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _recover(out: Path) -> None:
    """Put back a previous export that a killed export had moved aside (`out` missing, the export in an
    "old" folder beside it), and remove the folders beside `out` that dead exports left."""
    pattern = re.compile(re.escape(f".{out.name[:SIBLING_STEM]}.") + r"(tmp|old)-(\d+)-[0-9a-f]{8}")
    if not out.parent.is_dir():
        return
    for p in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or _alive(int(m.group(2))):
            continue
        if m.group(1) == "old":
            if not (p / out.name).is_dir():
                continue  # another OUT_DIR's, with a name that starts the same
            if not out.exists() and os.path.lexists(p / out.name / EXPORT_NOTE):
                os.replace(p / out.name, out)
        shutil.rmtree(p, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished export `tmp` to `out`, replacing an empty folder or a previous export. The
    previous one waits in a folder beside `out`, under its own name, until the new one is in place."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_hf(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's newest weights as a transformers Llama directory in `out_dir`; returns the note
    written beside them (seqlab_export.json)."""
    from seqlab.runs import load
    from seqlab.runs.directory import git_commit
    from seqlab.train.checkpoint import checkpoint_step, latest_checkpoint

    run_dir = Path(run_dir)
    _exportable(run_dir)
    _recover(Path(out_dir).resolve())
    _check_out_dir(Path(out_dir), run_dir)
    out = Path(out_dir).resolve()  # "." or "x/.." would have no name to put the temporary folder beside
    run = load(run_dir, device="cpu")
    model, vocab = run.model, run.kind.vocabulary(run)
    special, max_positions = vocab.pop("special"), vocab.pop("max_length")
    ckpt = latest_checkpoint(run_dir)
    rms_eps = model.norm.eps if model.norm.eps is not None else 1e-6
    config = llama_config(model.config, model.vocab_size, max_positions, rms_eps, special)
    tensors = llama_state_dict(model)
    run_config = read_json(run_dir / "config.json")
    note = {"export": EXPORT_KIND, "seqlab_version": __version__, "git_commit": git_commit(),
            "source": {"run_dir": str(run_dir.resolve()), "kind": run.kind.name, "checkpoint": ckpt.name,
                       "step": checkpoint_step(ckpt),
                       "seqlab_version": run_config.get("seqlab_version"), "git_commit": run_config.get("git_commit")},
            "model": model.config.to_json(), "position": model.config.position,
            "nope": ({"rope_type": "llama3", "factor": NOPE_FACTOR, "max_angle_radians": "position * 1e-30"}
                     if model.config.position == "none" else None),
            "vocab_size": model.vocab_size, "vocab": vocab, "task": run_config.get("task"),
            "format": run_config.get("format")}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    try:
        write_json(tmp / "config.json", config)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        note["files"] = sorted(p.name for p in tmp.iterdir())  # what a later export may replace, and only that
        write_json(tmp / EXPORT_NOTE, note)  # last: a folder with a note is a whole export
        for f in tmp.iterdir():  # the atomic writes make 0600 files; give them the folder's (umask) read bits
            f.chmod(tmp.stat().st_mode & 0o666)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return note
