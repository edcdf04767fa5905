"""Self-improvement (Lee, Cai et al. 2025): train on easy problems, then round after round label
slightly harder ones with the model itself, filter the labels and keep training on the mix.

Round 0 is an ordinary run on the task's starting range (true answers). Round r then:

1. draws fresh problems at the next lengths (`lengths_per_round` of them: 1 is the paper's
   schedule, more is its accelerated one) with their answers stripped off;
2. labels them by batched greedy decoding with each of the `n_models` models (KV cache);
3. filters: majority vote across models, the task's own validity check, the length filter;
4. continues every model from its last checkpoint on a mixture in which the newest round's labels
   have the share `new_share` and the rest is split over the starting range and earlier rounds in
   proportion to the lengths each covers (as the paper's code weighs them).

True answers are read in one place only, `label_report`, which scores labels for the report;
the problems handed to the models and the stored training data carry no answer (a test checks).
`labels="oracle"` (true answers) and `labels="none"` (no new data, same steps) are the controls.

The rounds are driven by `seqlab.self_improve.rounds` (which wires in decoding and evaluation); this module holds
the config, the filters' composition and the round data.

Layout: OUT/models/m<k>/ is model k's run directory; OUT/rounds/round-<r>/ holds the kept labels
(`data.jsonl`) and `done.json` (written last). A killed run resumes at the first round without
`done.json`, from each model's newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from seqlab.core.configs import Config
from seqlab.data.text import Labelled
from seqlab.core.errors import BadInput
from seqlab.formats.format import Format
from seqlab.core.io import atomic_write_text, read_json, read_jsonl
from seqlab.tasks import Example, Task
from seqlab.train.config import RunConfig
from seqlab.self_improve.label_filters import length_filter, majority_vote, validity_filter


class SelfImproveConfig(Config):
    rounds: int = 5
    labels: Literal["self", "oracle", "none"] = "self"  # "oracle" and "none" are the controls
    lengths_per_round: int = 1
    # Instead of whole lengths, the operand lengths each round labels: schedule[r - 1] is round r's
    # list of tuples, e.g. [[[1, 6], [6, 1]], [[2, 6], [6, 2]], ...] for the paper's multiplication.
    schedule: list[list[list[int]]] | None = None
    n_per_length: int = 2000  # problems labelled at each new length
    new_share: float = 0.5  # the newest round's share of each batch
    steps_per_round: int = 500
    decay_steps: int = 250  # the lr decays over the last this many steps of each round
    n_models: int = 1  # majority vote needs several
    workers: int = 1  # processes that train and label the models side by side (CPU threads are shared out)
    vote_fraction: float = 0.7  # keep a label when at least this share of the models wrote it (4 of 5)
    length_threshold: int | None = None  # drop labels this many characters shorter than their batch's longest
    check_validity: bool = True  # the task's own check (a maze path follows edges)
    label_batch: int = 256
    max_label_tokens: int = 256  # a label may be this long; it never depends on the true answer
    eval_lengths: list[int] | None = None  # default: 1 to the last round's length + 5
    eval_n: int = 100

    @model_validator(mode="after")
    def _check(self):
        for k in ("rounds", "lengths_per_round", "n_per_length", "steps_per_round", "n_models", "label_batch",
                  "max_label_tokens", "eval_n", "workers"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")
        if not 0 < self.new_share < 1 or not 0 < self.vote_fraction <= 1:
            raise ValueError("new_share must be in (0, 1) and vote_fraction in (0, 1]")
        if not 0 <= self.decay_steps <= self.steps_per_round:
            raise ValueError("decay_steps must be between 0 and steps_per_round")
        if self.length_threshold is not None and self.length_threshold < 1:
            raise ValueError("length_threshold must be at least 1")
        if self.schedule is not None and len(self.schedule) < self.rounds:
            raise ValueError(f"schedule lists {len(self.schedule)} rounds; rounds is {self.rounds}")
        if self.schedule is not None and any(not r or any(not t or min(t) < 1 for t in r) for r in self.schedule):
            raise ValueError("every schedule round needs at least one tuple of positive operand lengths")
        return self


def round_lengths(run: RunConfig, si: SelfImproveConfig, r: int) -> list[tuple[int, ...]]:
    """The operand lengths round r (from 1) labels: the schedule's, or else every operand at each of
    the next `lengths_per_round` lengths past the previous round."""
    if si.schedule is not None:
        return [tuple(t) for t in si.schedule[r - 1]]
    task = run.make_task()
    first = task.config.max_len + (r - 1) * si.lengths_per_round + 1
    return [(n,) * task.n_operands for n in range(first, first + si.lengths_per_round)]


def strip_answer(ex: Example, slice_key: str) -> Example:
    """The problem alone: what a model may see when it labels."""
    return Example(fields=ex.fields, ops=ex.ops, answer="", meta={slice_key: ex.meta.get(slice_key)})


def filter_labels(task: Task, problems: list[Example], votes: list[list[str]], si: SelfImproveConfig):
    """(labels, keep): the majority label per problem and whether every enabled filter keeps it."""
    labels, keep = majority_vote(votes, si.vote_fraction) if len(votes) > 1 else (votes[0], [True] * len(problems))
    if si.check_validity:
        keep = [k and v for k, v in zip(keep, validity_filter(task, problems, labels))]
    if si.length_threshold is not None:
        keep = [k and v for k, v in zip(keep, length_filter(labels, si.length_threshold, si.label_batch))]
    return labels, keep


def label_report(fmt: Format, truth: list[Example], labels: list[str], keep: list[bool],
                 single: list[str] | None = None) -> dict[str, Any]:
    """Label accuracy before and after filtering: the only place that reads true answers.

    `single`, when the labels come from a vote, is model 0's own labels: what one model alone would
    have written, the baseline the vote is measured against."""
    answers = [fmt.render(ex)[1] for ex in truth]
    right = [a == s for a, s in zip(answers, labels)]
    kept = [r for r, k in zip(right, keep) if k]
    report = {"n": len(labels), "kept": sum(keep), "kept_share": sum(keep) / max(len(keep), 1),
              "label_accuracy": sum(right) / max(len(right), 1),
              "label_accuracy_kept": sum(kept) / len(kept) if kept else None}
    if single is not None:
        report["label_accuracy_single"] = sum(a == s for a, s in zip(answers, single)) / max(len(single), 1)
    return report


def mixture_weights(n_start_lengths: int, earlier: list[int], new_share: float) -> list[float]:
    """Weights of [starting range, earlier rounds..., newest round]: the newest gets `new_share`, the
    rest is split in proportion to how many lengths each source covers."""
    sizes = [n_start_lengths, *earlier]
    total = sum(sizes)
    return [(1 - new_share) * s / total for s in sizes] + [new_share]


def round_dir(out: Path, r: int) -> Path:
    return Path(out) / "rounds" / f"round-{r:03d}"


def save_round_data(path: Path, items: list[Labelled]) -> None:
    lines = [json.dumps({"fields": list(it.problem.fields), "ops": list(it.problem.ops), "label": it.label,
                         "meta": it.problem.meta}) for it in items]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def load_round_data(path: Path) -> list[Labelled]:
    return [Labelled(Example(tuple(r["fields"]), tuple(r["ops"]), "", r["meta"]), r["label"]) for r in read_jsonl(path)]


def check_supported(run: RunConfig) -> None:
    if run.format.index_hints:
        raise BadInput("self-improvement does not take index hints: a label's hints would not match a random offset")
    if run.train.target_accuracy is not None:
        raise BadInput("self-improvement trains every round for its full steps: leave train.target_accuracy unset")


def rounds_done(out: Path) -> list[dict[str, Any]]:
    """The reports of finished rounds, in order (round 0 included once its models are trained)."""
    done = []
    r = 0
    while (round_dir(out, r) / "done.json").exists():
        done.append(read_json(round_dir(out, r) / "done.json"))
        r += 1
    return done
