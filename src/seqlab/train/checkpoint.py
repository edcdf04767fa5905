"""Checkpoints: safetensors weights and optimizer moments, plus a JSON trainer state.

Layout: ``checkpoints/step_00000500/{model,optimizer}.safetensors`` and ``state.json``, and
``checkpoints/latest.json`` naming the newest. A checkpoint folder is written under a temporary name
and renamed into place, and `latest.json` is replaced atomically after it, so a killed run always
finds a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from seqlab.core.errors import BadInput, RunFailed
from seqlab.core.io import read_json, write_json

CHECKPOINT_NAME = re.compile(r"step_\d{8,}")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return {k: v.contiguous() for k, v in tensors.items()}, sd["param_groups"]


def save_checkpoint(run_dir: Path, step: int, model, opt, state: dict[str, Any], keep: int = 2) -> Path:
    """Write the checkpoint of `step`; a write that fails (a full disk, a folder made read-only) leaves the
    checkpoints as they were and says so in one line."""
    ckpt_root = Path(run_dir) / "checkpoints"
    name = f"step_{step:08d}"
    tmp = ckpt_root / f".tmp_{name}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"))
        tensors, groups = _optimizer_tensors(opt)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", {**state, "step": step, "param_groups": groups})
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json(ckpt_root / "latest.json", {"step": step, "dir": name})
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)  # the space it took, and no half checkpoint left behind
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        raise RunFailed(f"cannot write the checkpoint of step {step} in {ckpt_root} ({reason}); the checkpoints "
                        f"before it are kept and the run resumes from the newest") from None
    older = sorted(p for p in ckpt_root.glob("step_*") if p.name != name)
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = read_json(pointer)["dir"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, OSError):
        raise BadInput(f"{pointer} is unreadable: the checkpoint index is corrupted") from None
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):  # never a path out of checkpoints/
        raise BadInput(f"{pointer} names no checkpoint folder ({name!r}): the checkpoint index is corrupted")
    return Path(run_dir) / "checkpoints" / name


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json: a mapping with its integer step, or one line saying it is not."""
    try:
        state = read_json(path / "state.json")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"checkpoint {path} is unreadable ({first})") from None
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise BadInput(f"checkpoint {path} is unreadable (its state.json holds no step)")
    return state


def check_state(state: dict[str, Any], path: Path) -> None:
    """The trainer's own entries of a checkpoint's state have the types the loop adds to, so a damaged
    state.json is refused at resume rather than failing mid-run."""
    window = state.get("loss_window")
    fine = (isinstance(state.get("stopped_early"), bool)
            and all(isinstance(state.get(k), (int, float)) and not isinstance(state.get(k), bool)
                    for k in ("train_seconds", "fit_seconds"))
            and (state.get("best_eval") is None or isinstance(state["best_eval"], (int, float)))
            and isinstance(window, list) and len(window) == 2 and all(isinstance(v, (int, float)) for v in window))
    if not fine:
        raise BadInput(f"checkpoint {path} is unreadable (its state.json holds damaged trainer state)")


def checkpoint_step(path: Path) -> int:
    return read_state(path)["step"]


def load_checkpoint(path: Path, model, opt=None) -> dict[str, Any]:
    """Load weights (and optimizer, RNG) in place; returns the JSON trainer state."""
    state = read_state(path)
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise BadInput(f"checkpoint {path} does not fit this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        if opt is not None:
            tensors = load_file(str(path / "optimizer.safetensors"))
            rng = tensors.pop("rng.torch")
            per_param: dict[int, dict[str, torch.Tensor]] = {}
            for key, v in tensors.items():
                idx, k = key.split(".", 1)
                per_param.setdefault(int(idx), {})[k] = v
            opt.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
            torch.set_rng_state(rng)
    except BadInput:
        raise
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"checkpoint {path} is unreadable ({first})") from None
    return state
