"""Batched greedy decoding and exact-match scoring."""

from __future__ import annotations

from collections import defaultdict

import torch

from seqlab.formats.format import Encoded, Format
from seqlab.tasks import Example
from seqlab.formats.tokenizer import EOS


@torch.no_grad()
def decode(model, encoded: list[Encoded], fmt: Format, batch_size: int = 256, device="cpu",
           max_new: int | None = None) -> list[str]:
    """The answer text the model writes for each prompt (greedy, KV cache).

    Prompts are grouped by length so a batch needs no padding. By default each answer may run to two
    tokens past the expected answer's length, which is enough to tell a right answer from a wrong
    one; `max_new` fixes the limit instead (labelling, where no answer is known).
    """
    was_training = model.training
    model.eval()
    out: list[str | None] = [None] * len(encoded)
    groups: dict[int, list[int]] = defaultdict(list)
    for k, e in enumerate(encoded):
        groups[len(e.prompt)].append(k)
    for idx in groups.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            prompt = torch.tensor([encoded[k].prompt for k in chunk], device=device)
            pos = torch.tensor([encoded[k].prompt_pos for k in chunk], device=device)
            base = torch.tensor([encoded[k].answer_pos_base for k in chunk], device=device)
            limit = max_new or max(len(encoded[k].answer) for k in chunk) + 2
            gen = model.generate(prompt, pos, base, limit, EOS).tolist()
            for k, row in zip(chunk, gen):
                out[k] = fmt.tokenizer.decode(row)
    model.train(was_training)
    return out  # type: ignore[return-value]


def exact_match(model, pairs: list[tuple[Example, Encoded]], fmt: Format, slice_key: str, device="cpu", batch_size: int = 256):
    """Overall and per-slice exact match of greedy answers against the format's answer text."""
    answers = decode(model, [e for _, e in pairs], fmt, batch_size, device)
    right: dict = defaultdict(int)
    total: dict = defaultdict(int)
    for (ex, enc), got in zip(pairs, answers):
        s = ex.meta.get(slice_key)
        total[s] += 1
        right[s] += int(got == enc.answer_text)
    n = sum(total.values())
    return {
        "exact_match": sum(right.values()) / max(n, 1),
        "n": n,
        "by_slice": {str(s): {"exact_match": right[s] / total[s], "n": total[s]} for s in sorted(total, key=_key)},
    }


def _key(s):
    return (0, s) if isinstance(s, (int, float)) else (1, str(s))
