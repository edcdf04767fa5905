"""Examples rendered for `seqlab sample`: prompt, target and the canonical problem in meta."""

from __future__ import annotations

from typing import Any, Iterator

from seqlab.core.configs import apply_overrides, parse_config
from seqlab.formats.format import Format, FormatConfig
from seqlab.tasks import get


def sample_examples(task_name: str, task_params: dict[str, Any], format_overrides: list[str], n: int, seed: int,
                    split: str) -> Iterator[dict[str, Any]]:
    task = get(task_name, **task_params)
    fmt = None
    if format_overrides:
        fc = parse_config(FormatConfig, apply_overrides({}, format_overrides), prefix="format.")
        fmt = Format(fc, task, "standard" if fc.position_ids == "auto" else fc.position_ids)
    for i in range(n):
        ex = task.example(seed, split, i)
        prompt, target = (ex.prompt, ex.target) if fmt is None else fmt.render(ex)
        yield {"task": task.name, "prompt": prompt, "target": target, "meta": ex.meta}
