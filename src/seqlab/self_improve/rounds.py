"""Self-improvement rounds, wired together: label with decoding, train on mixtures, evaluate.

The loop's parts (config, filters, round data) are in `seqlab.self_improve.config`; this module
runs them, since labelling needs decoding and the report needs evaluation (layers below `train`).
"""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from seqlab.core.configs import apply_overrides, parse_config
from seqlab.data.text import Labelled, MixtureStream
from seqlab.core.errors import BadInput
from seqlab.eval.decode import decode, exact_match
from seqlab.formats.format import Format
from seqlab.core.io import read_json, write_json
from seqlab.core.lock import folder_lock
from seqlab.runs import load, read_config, train
from seqlab.runs.directory import check_writable, is_own_leftover
from seqlab.runs.text import TEXT, build_parts, evaluate_by_length
from seqlab.train import RunConfig, Trainer
from seqlab.self_improve.config import (
    SelfImproveConfig,
    check_supported,
    filter_labels,
    label_report,
    load_round_data,
    mixture_weights,
    round_dir,
    round_lengths,
    rounds_done,
    save_round_data,
    strip_answer,
)


def resolve_self_improve(base: dict[str, Any] | None, overrides: list[str] = (), out: Path | None = None):
    """(run config, self-improvement config) from a config file's sections (task, format, model, train,
    self_improve) and `key=value` overrides. Given neither, the run in `out` (to resume it)."""
    if not base and not overrides and out is not None and (Path(out) / "self_improve.json").exists():
        spec = read_json(Path(out) / "self_improve.json")
        base = {**spec["run"], "self_improve": spec["self_improve"]}
    data = apply_overrides(base or {}, list(overrides))
    si_data = data.pop("self_improve", {})
    if not isinstance(si_data, dict):
        raise BadInput("self_improve must be a section of settings, e.g. self_improve.rounds=10")
    return parse_config(RunConfig, data), parse_config(SelfImproveConfig, si_data, prefix="self_improve.")


def _same_or_extended(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether `new` is the run stored as `old`, or that run with more rounds: the same settings but
    `rounds` (not fewer), `eval_lengths` (the test covers the new lengths) and a schedule that starts
    with the old one. Rounds 1..old are then the same, so a finished run is extended, not redone."""
    if old == new:
        return True
    a, b = old["self_improve"], new["self_improve"]
    loose = ("rounds", "eval_lengths", "schedule")
    return (old["run"] == new["run"] and b["rounds"] >= a["rounds"]
            and {k: v for k, v in a.items() if k not in loose} == {k: v for k, v in b.items() if k not in loose}
            and (a["schedule"] is None) == (b["schedule"] is None)
            and (a["schedule"] is None or b["schedule"][: a["rounds"]] == a["schedule"][: a["rounds"]]))


def seeded_config(run: RunConfig, k: int) -> RunConfig:
    """Model k of the vote: the same run with its own seed."""
    return run.model_copy(update={"train": run.train.model_copy(update={"seed": run.train.seed + k})})


def _eval_lengths(run: RunConfig, si: SelfImproveConfig) -> list[int]:
    if si.eval_lengths:
        return si.eval_lengths
    top = max(max(t) for r in range(1, si.rounds + 1) for t in round_lengths(run, si, r))
    return list(range(1, top + 6))


def per_model(fn, jobs: list[tuple], workers: int = 1) -> list:
    """[fn(*job) for job in jobs], in `workers` processes when more than one.

    Each worker gets an equal share of the CPU threads and shows no progress bar (several bars
    would garble each other). Workers are spawned, not forked: a forked torch can hang. The jobs
    reach them through an in-memory pipe; nothing is read back from disk but JSON and safetensors."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    workers = min(workers, len(jobs))
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def train_models(model_dirs: list[Path], run: RunConfig, workers: int = 1, quiet: bool = False) -> None:
    """Train (or finish) model k of a vote in model_dirs[k] with seed run.seed + k."""
    quiet = quiet or workers > 1
    per_model(_train_one, [(d, seeded_config(run, k), quiet) for k, d in enumerate(model_dirs)], workers)


def _train_one(model_dir: Path, config: RunConfig, quiet: bool) -> None:
    train(model_dir, config, TEXT, quiet=quiet)


def _label_one(model_dir: Path, problems: list, label_batch: int, max_new: int) -> list[str]:
    """One model's greedy labels for `problems` (answers stripped)."""
    run = load(model_dir)
    return decode(run.model, [run.format.encode(p) for p in problems], run.format, label_batch, run.device, max_new=max_new)


def _continue(model_dir: Path, sources, total_steps: int, si: SelfImproveConfig, quiet: bool) -> None:
    """Train one model on to `total_steps` on a mixture, from its newest checkpoint."""
    config = read_config(model_dir, TEXT)
    _, fmt, model = build_parts(config)
    train = config.train.model_copy(update={
        "steps": total_steps, "schedule": "wsd", "decay_frac": si.decay_steps / total_steps,
        "target_accuracy": None, "eval_every": total_steps})
    stream = MixtureStream(sources, fmt, config.train.seed, train.batch_size)
    trainer = Trainer(model, stream, train, model_dir, evaluate=None, quiet=quiet)
    trainer.resume()
    trainer.fit()


def self_improve(out: Path, run: RunConfig, si: SelfImproveConfig, quiet: bool = False,
                 round0: Path | None = None) -> list[dict[str, Any]]:
    """Run (or resume) rounds 0..si.rounds in `out`; returns each round's report.

    `round0`, a folder of finished round-0 runs (`m0`, `m1`, ... trained on this `run` with seeds
    seed, seed + 1, ...), is copied in instead of training round 0 again: arms that differ only
    after round 0 share it. The folder's lock (seqlab.core.lock) is held throughout: a second process on
    the same `out` is refused with the PID of the first."""
    out = Path(out)
    check_supported(run)
    # how many processes do the work is not part of what the run is: a resumed run may use others
    spec = {"run": run.to_json(), "self_improve": {k: v for k, v in si.to_json().items() if k != "workers"}}
    _check_out(out, spec)
    check_writable(out)
    with folder_lock(out, what="self-improvement folder"):
        _check_out(out, spec)  # again, under the lock: another process may have written it meanwhile
        write_json(out / "self_improve.json", spec)
        return _rounds(out, run, si, quiet, round0)




def _check_out(out: Path, spec: dict[str, Any]) -> None:
    """Refuse an `out` that holds another self-improvement run, or anything but seqlab's own lock file."""
    spec_path = out / "self_improve.json"
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory; choose a new --out")
    if spec_path.exists() and not _same_or_extended(read_json(spec_path), spec):
        raise BadInput(f"{out} holds a different self-improvement run; choose a new --out")
    if not spec_path.exists() and out.exists() and any(not is_own_leftover(p.name) for p in out.iterdir()):
        raise BadInput(f"{out} exists and is not a self-improvement run; choose a new --out")


def _rounds(out: Path, run: RunConfig, si: SelfImproveConfig, quiet: bool, round0: Path | None) -> list[dict[str, Any]]:
    task = run.make_task()
    fmt = Format(run.format, task, run.format_position_ids)
    model_dirs = [out / "models" / f"m{k}" for k in range(si.n_models)]
    eval_lengths = _eval_lengths(run, si)
    reports = rounds_done(out)

    if not reports:  # round 0: ordinary runs on the starting range, with true answers
        for k, d in enumerate(model_dirs):
            if round0 is not None and not d.exists():
                shutil.copytree(Path(round0) / f"m{k}", d)
        train_models(model_dirs, run, si.workers, quiet)  # checks a copied run is this one; finishes it
        ev = evaluate_by_length(model_dirs[0], eval_lengths, si.eval_n, label="round_000")
        report = {"round": 0, "train_range": [task.config.min_len, task.config.max_len], "steps": run.train.steps,
                  "exact_match_by_length": ev["exact_match_by_length"]}
        write_json(round_dir(out, 0) / "done.json", report)
        reports.append(report)

    n_start = task.config.max_len - task.config.min_len + 1
    kept: dict[int, list[Labelled]] = {}  # round -> its kept labels, each file read once
    for r in range(len(reports), si.rounds + 1):
        rdir = round_dir(out, r)
        lengths = round_lengths(run, si, r)
        data_path, label_path = rdir / "data.jsonl", rdir / "labels.json"
        if not label_path.exists():  # labels are made once, by the models as they were after round r - 1
            items, labels = _make_labels(task, fmt, run, si, model_dirs, lengths)
            save_round_data(data_path, items)
            write_json(label_path, labels)
        labels = read_json(label_path)

        for q in range(1, r + 1):
            if q not in kept:
                kept[q] = load_round_data(round_dir(out, q) / "data.jsonl")
        # (lengths covered, kept labels) of every earlier round that kept any
        earlier = [(len(reports[q]["lengths"]), kept[q]) for q in range(1, r) if kept[q]]
        newest = kept[r]
        if newest:
            weights = mixture_weights(n_start, [n for n, _ in earlier], si.new_share)
            sources = [(weights[0], task)] + [(w, items) for w, (_, items) in zip(weights[1:-1], earlier)]
            sources.append((weights[-1], newest))
        else:  # nothing kept (or the no-self-improvement control): the old mixture, same steps
            total = n_start + sum(n for n, _ in earlier)
            sources = [(n_start / total, task)] + [(n / total, items) for n, items in earlier]
        total_steps = run.train.steps + r * si.steps_per_round
        per_model(_continue, [(d, sources, total_steps, si, quiet or si.workers > 1) for d in model_dirs],
                  si.workers)
        ev = evaluate_by_length(model_dirs[0], eval_lengths, si.eval_n, label=f"round_{r:03d}")
        report = {"round": r, "lengths": [list(t) for t in lengths], "steps": total_steps, "labels": labels,
                  "exact_match_by_length": ev["exact_match_by_length"]}
        if si.schedule is not None:  # sizes off the diagonal (1 x 6) are not in the by-length curve
            report["exact_match_at_round_sizes"] = exact_match_by_size(model_dirs[0], lengths, si.eval_n,
                                                                       run.train.seed)
        write_json(rdir / "done.json", report)
        reports.append(report)
    return reports


def exact_match_by_size(model_dir: Path, sizes: list[tuple[int, ...]], n: int, seed: int) -> dict[str, float]:
    """Exact match of model_dir's model on n held-out problems of each operand-length tuple, keyed "1x6"."""
    run = load(model_dir)
    task, fmt = run.task, run.format
    out = {}
    for t in sizes:
        pairs = [(ex, fmt.encode(ex)) for ex in (task.example(seed, "test", i, lengths=tuple(t)) for i in range(n))]
        out["x".join(map(str, t))] = exact_match(run.model, pairs, fmt, task.slice_key, device=run.device)["exact_match"]
    return out


def _make_labels(task, fmt: Format, run: RunConfig, si: SelfImproveConfig, model_dirs, lengths):
    """(kept labelled problems, label report) for one round."""
    truth = [task.example(run.train.seed, "train", i, lengths=t) for t in lengths for i in range(si.n_per_length)]
    problems = [strip_answer(ex, task.slice_key) for ex in truth]
    if si.labels == "none":
        return [], {"n": 0, "kept": 0, "kept_share": None, "label_accuracy": None, "label_accuracy_kept": None}
    votes = None
    if si.labels == "oracle":
        labels = [fmt.render(ex)[1] for ex in truth]
        keep = [True] * len(labels)
    else:
        votes = per_model(_label_one, [(d, problems, si.label_batch, si.max_label_tokens) for d in model_dirs],
                          si.workers)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        labels, keep = filter_labels(task, problems, votes, si)
    return [Labelled(p, s) for p, s, k in zip(problems, labels, keep) if k], label_report(
        fmt, truth, labels, keep, single=votes[0] if votes and len(votes) > 1 else None)
