"""Faults injected into a seqlab child process: SIGKILL at the k-th time a write reaches a given point.

A fault is a dict:
    {"at": "before_replace", "path": GLOB, "nth": K}  the K-th os.replace onto a path matching GLOB: killed
                                                        with the new file whole beside the old, not renamed
    {"at": "half_replace", ...}                         the same with the new file cut to half its bytes
    {"at": "after_replace", ...}                        killed just after the rename, before what follows
    {"at": "metrics_line", "nth": K}                    the K-th metrics.jsonl line, half written
    {"at": "safetensors", "path": GLOB, "nth": K}       a checkpoint's safetensors file, half written
    {"at": "rmtree", "path": GLOB, "nth": K}            removing an old checkpoint, one file gone
GLOB is matched (fnmatch) against the whole path. Before a fault kills, its name goes into the `fired` file,
so a test knows the kill happened where it meant it to.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
from pathlib import Path


def name(f: dict) -> str:
    return f"{f['at']}:{f.get('path', '*')}:{f.get('nth', 1)}"


def install(fault_list: list[dict], fired_path: str) -> None:
    counts = [0] * len(fault_list)

    def hit(i: int, path) -> bool:
        f = fault_list[i]
        if not fnmatch.fnmatch(str(path), f.get("path", "*")):
            return False
        counts[i] += 1
        return counts[i] == f.get("nth", 1)

    def die(i: int) -> None:
        with open(fired_path, "a") as out:
            out.write(name(fault_list[i]) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def matching(at: str):
        return [i for i, f in enumerate(fault_list) if f["at"] == at]

    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        for i, f in enumerate(fault_list):
            if f["at"] in ("before_replace", "half_replace") and hit(i, dst):
                if f["at"] == "half_replace" and os.path.isfile(src):
                    os.truncate(src, os.path.getsize(src) // 2)
                die(i)
        real_replace(src, dst, *a, **kw)
        for i in matching("after_replace"):
            if hit(i, dst):
                die(i)

    os.replace = replace

    if matching("metrics_line"):
        from seqlab.train.trainer import Trainer

        real_log = Trainer._log

        def log(self, record):
            for i in matching("metrics_line"):
                if hit(i, self.metrics_path):
                    import json

                    line = json.dumps(record) + "\n"
                    with open(self.metrics_path, "a") as out:
                        out.write(line[: len(line) // 2])
                    die(i)
            real_log(self, record)

        Trainer._log = log

    if matching("safetensors"):
        from seqlab.train import checkpoint

        def cutting(real):
            def save(obj, filename, *a, **kw):
                real(obj, filename, *a, **kw)
                for i in matching("safetensors"):
                    if hit(i, filename):
                        os.truncate(filename, os.path.getsize(filename) // 2)
                        die(i)
            return save

        checkpoint.save_model = cutting(checkpoint.save_model)
        checkpoint.save_file = cutting(checkpoint.save_file)

    if matching("rmtree"):
        real_rmtree = shutil.rmtree

        def rmtree(path, *a, **kw):
            for i in matching("rmtree"):
                if hit(i, path):
                    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
                    if files:
                        files[0].unlink()
                    die(i)
            real_rmtree(path, *a, **kw)

        shutil.rmtree = rmtree
