"""Formats: how a task example becomes token ids, position ids and a loss mask.

The options follow the arithmetic length-generalization literature:

- ``reverse_output``: the answer is written least significant digit first (Lee et al. 2023).
- ``reverse_operands``: operands are written least significant digit first too (McLeish et al. 2024).
- ``zero_pad``: operands are padded with leading zeros to the same width and the answer to its
  widest possible width (numeric tasks only).
- ``index_hints``: each character is preceded by a hint symbol naming its place (Zhou et al. 2024):
  ``a7b3+a4b5=`` ... The hint counts significance (units are the first hint), so it stays with its digit
  when a number is reversed. During training the hints start at a random offset in [0, max_offset]
  so that hints for long numbers are trained too.
- ``position_ids``: ``standard`` (0, 1, 2, ...), ``abacus`` (McLeish 2024: each character's index within
  its operand as written, 1-based, plus a random offset in [0, max_offset] during training) or ``coupled`` (Cho et al. 2024: characters of equal significance share an id, 1-based, plus a
  random offset during training). In both, separators get id 0, except "=", which gets the id just
  before the answer's first one; under ``coupled`` BOS gets the id one past the top digit of the
  widest operand, which marks where the numbers end. ``auto`` takes the one the model's position
  scheme needs.

Answer position ids are always ``base + j`` for answer token j, so a decoder can compute them while it
generates without knowing the answer's length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import model_validator

from seqlab.core.configs import Config
from seqlab.core.errors import BadInput
from seqlab.tasks import Example, Task
from seqlab.formats.tokenizer import BOS, EOS, CharTokenizer

# Index hint symbols, by place: a-z, A-Z, then Latin Extended letters, 256 places in all.
HINTS = "".join(chr(c) for c in range(ord("a"), ord("z") + 1))
HINTS += "".join(chr(c) for c in range(ord("A"), ord("Z") + 1))
HINTS += "".join(chr(c) for c in range(0x100, 0x100 + 256 - len(HINTS)))


class FormatConfig(Config):
    reverse_output: bool = True
    reverse_operands: bool = False
    zero_pad: bool = False
    index_hints: bool = False
    position_ids: Literal["auto", "standard", "abacus", "coupled"] = "auto"
    max_offset: int = 0

    @model_validator(mode="after")
    def _check(self):
        if self.max_offset < 0:
            raise ValueError("max_offset must be >= 0")
        if self.index_hints and self.position_ids in ("abacus", "coupled"):
            raise ValueError("index hints go with standard position ids, not abacus or coupled ones")
        return self


@dataclass
class Encoded:
    """One example as token ids. Answer token j has position id `answer_pos_base + j`."""

    prompt: list[int]  # BOS + prompt
    answer: list[int]  # answer + EOS
    prompt_pos: list[int]
    answer_pos_base: int
    answer_text: str  # the answer as the format writes it (what exact match compares)


class Format:
    def __init__(self, config: FormatConfig, task: Task, position_ids: str = "standard"):
        self.config = config
        self.task = task
        self.position_ids = position_ids if config.position_ids == "auto" else config.position_ids
        c = config
        if task.fixed_order and (c.reverse_output or c.reverse_operands):
            raise BadInput(f"'{task.name}' is written in the order it is read: set format.reverse_output=false "
                           "(and leave reverse_operands false)")
        if c.zero_pad and not task.numeric:
            raise BadInput(f"format.zero_pad applies to numeric tasks, not '{task.name}'")
        if self.position_ids == "coupled" and c.reverse_output != task.numeric:
            want = "true" if task.numeric else "false"
            raise BadInput(
                f"coupled position ids need the answer written in the order of its significance: "
                f"set format.reverse_output={want} for '{task.name}'"
            )
        if c.index_hints and self.position_ids != "standard":
            raise BadInput("index hints go with standard position ids, not abacus or coupled ones")
        chars = task.alphabet() + task.symbols()
        if c.index_hints:
            clash = set(HINTS) & set(chars)
            if clash:
                raise BadInput(f"index hints clash with the task's characters {''.join(sorted(clash))!r}")
            chars += HINTS
            self.check_hints(task)
        self.tokenizer = CharTokenizer(chars)

    def check_hints(self, task: Task) -> None:
        """Refuse a task whose longest operand or answer needs more index-hint places than there are, with the
        largest offset training draws: found from the config, before any example is written."""
        if not self.config.index_hints:
            return
        width = task.max_written_length()
        if width + self.config.max_offset > len(HINTS):
            offset = f" + format.max_offset={self.config.max_offset}" if self.config.max_offset else ""
            raise BadInput(f"index hints name {len(HINTS)} places, and {task.name} at max_len={task.config.max_len} "
                           f"writes operands or answers of up to {width} characters{offset}: lower max_len or "
                           f"format.max_offset, or drop format.index_hints")

    # -- text ------------------------------------------------------------------------------------
    def _places(self, text: str, align: str) -> list[int]:
        n = len(text)
        return [n - 1 - k for k in range(n)] if align == "right" else list(range(n))

    def _render(self, text: str, align: str, reverse: bool, hint_offset: int) -> tuple[str, list[int], list[int]]:
        """Text as written, with each character's significance and written index (hint chars: -1)."""
        chars, places = list(text), self._places(text, align)
        if reverse:
            chars, places = chars[::-1], places[::-1]
        out, sig, idx = [], [], []
        for k, (ch, p) in enumerate(zip(chars, places)):
            if self.config.index_hints:
                if p + hint_offset >= len(HINTS):
                    raise BadInput(f"index hints support {len(HINTS)} places; this example needs more")
                out.append(HINTS[p + hint_offset])
                sig.append(-1)
                idx.append(-1)
            out.append(ch)
            sig.append(p)
            idx.append(k)
        return "".join(out), sig, idx

    def _padded(self, ex: Example) -> tuple[list[str], str]:
        fields, answer = list(ex.fields), ex.answer
        if self.config.zero_pad:
            width = max(len(f) for f in fields)
            lengths = tuple(len(f) for f in fields)
            fields = [f.zfill(width) for f in fields]
            answer = answer.zfill(self.task.answer_width(lengths))
        return fields, answer

    def render(self, ex: Example, rng: random.Random | None = None) -> tuple[str, str]:
        """Prompt and answer text as this format writes them."""
        enc_text = self._render_all(ex, self._offset(rng))
        return enc_text[0], enc_text[3]

    def _offset(self, rng: random.Random | None) -> int:
        return rng.randint(0, self.config.max_offset) if (rng is not None and self.config.max_offset) else 0

    def _render_all(self, ex: Example, offset: int):
        c = self.config
        fields, answer = self._padded(ex)
        prompt, sig, idx = "", [], []
        for f, op in zip(fields, ex.ops):
            text, s, k = self._render(f, self.task.align, c.reverse_operands, offset)
            prompt += text + op
            sig += s + [-1] * len(op)
            idx += k + [-1] * len(op)
        answer_align = "right" if self.task.numeric else "left"
        answer_text, _, _ = self._render(answer, answer_align, c.reverse_output, offset)
        return prompt, sig, idx, answer_text

    # -- tokens ----------------------------------------------------------------------------------
    def encode(self, ex: Example, rng: random.Random | None = None, answer_text: str | None = None) -> Encoded:
        """Token ids for an example; `rng` (training only) draws the random position or hint offset.

        `answer_text`, as this format writes answers, replaces the example's own answer (a label a
        model wrote); position ids never depend on the answer, so they are the same either way."""
        offset = self._offset(rng)
        prompt, sig, idx, own_answer = self._render_all(ex, offset)
        answer_text = own_answer if answer_text is None else answer_text
        tok = self.tokenizer
        prompt_ids = [BOS] + tok.encode(prompt)
        answer_ids = tok.encode(answer_text) + [EOS]
        if self.position_ids == "standard":
            pos = list(range(len(prompt_ids)))
            base = len(prompt_ids)
        else:
            per_char = sig if self.position_ids == "coupled" else idx
            pos = [0] + [p + 1 + offset if p >= 0 else 0 for p in per_char]
            base = 1 + offset
            # The token that predicts the first answer character ("=") sits just before the answer,
            # so every prediction step in the answer reads at "own id + 1".
            pos[-1] = base - 1
            if self.position_ids == "coupled":
                # BOS takes the id one past the widest operand's top digit, so the end of the numbers is
                # something present to look up: the step that writes the last digit of a sum reads BOS at
                # "own id + 1" (where a digit would be), and the step after it reads BOS at "own id".
                pos[0] = base + max(sig) + 1
        return Encoded(prompt_ids, answer_ids, pos, base, answer_text)

    def max_position(self, ex: Example) -> int:
        """The largest position id this example can get (with the largest offset)."""
        enc = self.encode(ex)
        top = max(max(enc.prompt_pos), enc.answer_pos_base + len(enc.answer) - 1)
        return top + (self.config.max_offset if self.position_ids != "standard" else 0)


def parse_prompt(task: Task, text: str) -> Example:
    """The problem a prompt written as the task writes it (`seqlab sample` without a format) states: its
    operands are the runs of characters between the task's separators. Its answer is unknown (empty)."""
    import re

    seps = "".join(dict.fromkeys(task.symbols()))
    parts = re.split(f"([{re.escape(seps)}]+)", text)
    fields, ops = tuple(parts[0::2][:-1]), tuple(parts[1::2])
    ex = Example(fields, ops, "")
    if not text.endswith("=") or parts[-1] or not fields or not all(fields) or ex.prompt != text:
        raise BadInput(f"{text!r} is not a prompt of {task.name}: operands joined by its separators "
                       f"{task.symbols()!r} and ending with '=', as `seqlab sample {task.name}` writes them")
    return ex
