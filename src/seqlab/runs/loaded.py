"""A trained run of any kind, loaded: `seqlab.load(RUN_DIR)`.

    run = seqlab.load("runs/my-addition")
    run.generate(["12+34="], max_new_tokens=8)         # ['64'] (as the run's format writes answers)
    run.score(["12+34="], ["64"])                       # log-probabilities, teacher-forced
    logits, cache = run.run_with_cache(*run.batch(["12+34="]), names=lambda n: n.endswith("resid_post"))

What a prompt is depends on the kind: a text run takes the task's prompt as `seqlab sample` prints it
without a format (the run's format renders it), a token run lists of token ids, and an in-context run
reads vectors (`run.predict(xs, ys)`) and has no text to generate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from seqlab.analysis import hook_names, hooks, run_with_cache, run_with_hooks
from seqlab.core.errors import BadInput
from seqlab.core.targets import IGNORE
from seqlab.eval.sampling import next_token_picker
from seqlab.runs.kind import RunKind


@dataclass
class Prompt:
    """A prompt as the model reads it: token ids, their position ids, and the position id of the first
    token written after it (answer token j gets `answer_pos_base + j`)."""

    ids: list[int]
    pos: list[int]
    answer_pos_base: int


@dataclass
class LoadedRun:
    run_dir: Path
    kind: RunKind
    config: Any  # the resolved config, typed as the kind's
    task: Any  # the task, token task or function class the run trained on
    model: torch.nn.Module  # the newest checkpoint's weights, in eval mode
    format: Any = None  # a text run's Format; None for the other kinds
    step: int = 0  # the newest checkpoint's step

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer(self):
        """A text run's character tokenizer (None for the other kinds)."""
        return None if self.format is None else self.format.tokenizer

    # -- text in, text out ---------------------------------------------------------------------
    def encode(self, prompt) -> Prompt:
        """A prompt as token ids and position ids (BadInput where it is not one this run's model reads)."""
        return self.kind.encode_prompt(self, prompt)

    def decode(self, ids: Sequence[int]):
        """Generated token ids as the kind writes them: text for a text run, the ids for a token run."""
        return self.kind.decode_output(self, list(ids))

    def batch(self, prompts: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, position ids), (B, L) each, of prompts of equal length: the model's own inputs, for
        hooks and caching."""
        encoded = [self.encode(p) for p in prompts]
        if len({len(e.ids) for e in encoded}) > 1:
            raise BadInput("batch() takes prompts of equal length (they are stacked without padding)")
        return (torch.tensor([e.ids for e in encoded], device=self.device),
                torch.tensor([e.pos for e in encoded], device=self.device))

    @torch.no_grad()
    def generate(self, prompts: Sequence, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, batch_size: int = 256, **sampling) -> list:
        """What the model writes after each prompt: greedy by default, sampled with `temperature` (and
        `top_k`, `top_p`; `seed` for repeatable draws; any other knob of seqlab.eval.sampling.SamplingConfig,
        e.g. typical=0.9 or mirostat_tau=3.0). Batched over prompts of equal length, with the model's KV
        cache; a text answer stops at the end token."""
        if max_new_tokens < 1:
            raise BadInput("max_new_tokens must be at least 1")
        pick = next_token_picker(temperature, top_k, top_p, seed, **sampling)
        encoded = [self.encode(p) for p in prompts]
        eos = self.kind.end_token(self)
        out: list = [None] * len(encoded)
        groups: dict[int, list[int]] = defaultdict(list)
        for k, e in enumerate(encoded):
            groups[len(e.ids)].append(k)
        dev = self.device
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                chunk = idx[s:s + batch_size]
                ids = torch.tensor([encoded[k].ids for k in chunk], device=dev)
                pos = torch.tensor([encoded[k].pos for k in chunk], device=dev)
                base = torch.tensor([encoded[k].answer_pos_base for k in chunk], device=dev)
                rows = self.model.generate(ids, pos, base, max_new_tokens, eos, pick=pick).tolist()
                for k, row in zip(chunk, rows):
                    out[k] = self.decode(row)
        return out

    @torch.no_grad()
    def score(self, prompts: Sequence, continuations: Sequence, end: bool = False, batch_size: int = 256) -> list[float]:
        """The log-probability (natural log) the model gives each continuation after its prompt, teacher-forced:
        the sum over the continuation's tokens (and the end token after it with `end`, text runs)."""
        if len(prompts) != len(continuations):
            raise BadInput(f"score() takes as many continuations as prompts ({len(continuations)} for {len(prompts)})")
        rows = []
        for p, c in zip(prompts, continuations):
            e = self.encode(p)
            cont = self.kind.encode_continuation(self, c, end)
            if not cont:
                raise BadInput("score() needs a non-empty continuation")
            rows.append((e.ids + cont, e.pos + [e.answer_pos_base + j for j in range(len(cont))], len(e.ids), cont))
        out: list[float] = []
        dev = self.device
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            L = max(len(r[0]) for r in chunk) - 1  # the last token predicts nothing
            tokens = torch.zeros(len(chunk), L, dtype=torch.long)
            pos = torch.zeros(len(chunk), L, dtype=torch.long)
            targets = torch.full((len(chunk), L), IGNORE, dtype=torch.long)
            for r, (ids, ps, n_prompt, cont) in enumerate(chunk):
                n = len(ids) - 1
                tokens[r, :n], pos[r, :n] = torch.tensor(ids[:-1]), torch.tensor(ps[:-1])
                targets[r, n_prompt - 1:n] = torch.tensor(cont)  # input t predicts token t + 1
            logits, wanted = self.model.scored_logits(tokens.to(dev), targets.to(dev), pos.to(dev))
            logp = logits.float().log_softmax(-1).gather(-1, wanted[:, None])[:, 0].cpu()
            counts = [len(r[3]) for r in chunk]
            out += [float(x.sum()) for x in torch.split(logp, counts)]  # scored positions come row by row
        return out

    # -- vectors in, numbers out ---------------------------------------------------------------
    def predict(self, xs: np.ndarray, ys: np.ndarray, loops: int | None = None) -> np.ndarray:
        """An in-context run's (n, k) predictions of every prefix of prompts (xs (n, k, d), ys (n, k))."""
        return self.kind.predict(self, xs, ys, loops)

    # -- inside the model (seqlab.analysis) ---------------------------------------------------
    def hook_names(self) -> list[str]:
        return hook_names(self.model)

    def run_with_cache(self, *inputs, names=None, **kwargs):
        """(model output, {hook name: activation}) for the model's own inputs (see `batch`)."""
        return run_with_cache(self.model, *inputs, names=names, **kwargs)

    def run_with_hooks(self, *inputs, fwd_hooks, **kwargs):
        return run_with_hooks(self.model, *inputs, fwd_hooks=fwd_hooks, **kwargs)

    def hooks(self, fwd_hooks):
        """A `with` block in which the given functions sit on the model's hook points."""
        return hooks(self.model, fwd_hooks)
