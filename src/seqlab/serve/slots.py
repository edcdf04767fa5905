"""A fixed number of decoding slots over one decoder: the serving engine's batch. Each slot holds one request at its
own length, so requests of different prompt lengths decode side by side and a finished request's slot can take a
new one at the next step (continuous batching) without touching the others.

Requests are prefilled apart from the batch, those of one prompt length together, exactly as `Decoder.generate`
prefills them, and their caches are copied into their slots (`put_row`). A step then feeds every slot its last
token at its own position: attention reads each row's keys up to its own length (RowKVCache), a recurrent state is
per row anyway. Every slot is computed at every step, busy or not, so a step's cost depends on the number of slots
and the longest row, which is what the simulator's service-time model is fitted on.

Greedy only: what the engine is for is throughput and latency of one decoding rule, and greedy outputs can be
checked against one-at-a-time decoding token for token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

import torch

from seqlab.core.errors import BadInput
from seqlab.models.mixers.attention import RowKVCache


@dataclass
class Request:
    id: int
    prompt: list[int]
    prompt_pos: list[int]  # the format's position ids of the prompt
    pos_base: int  # the position id of the first new token
    max_new_tokens: int
    eos: int
    arrival: float = 0.0  # seconds
    predicted: float | None = None  # the output length a predictor expects (multi-bin batching)
    true_length: int | None = None  # the output length greedy decoding gives, where known (the simulator's)


@dataclass
class _Slot:
    request: Request
    tokens: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.tokens[-1] == self.request.eos or len(self.tokens) == self.request.max_new_tokens


class SlotBatch:
    """`n_slots` requests decoding together, each of up to `max_len` tokens (prompt and output)."""

    def __init__(self, model, n_slots: int, max_len: int):
        if n_slots < 1:
            raise BadInput(f"the engine needs at least one slot, got {n_slots}")
        self.model, self.n_slots, self.max_len = model, n_slots, max_len
        self.device = model.tok_emb.weight.device
        row_cache = lambda i, b, h, hd: RowKVCache(b, h, hd, max_len, self.device, model.tok_emb.weight.dtype)  # noqa: E731
        self.caches = model.new_caches(n_slots, max_len, self.device, kv_cache=row_cache)
        for c in self.caches:
            if not (isinstance(c, dict) or hasattr(c, "put_row")):
                raise BadInput(f"the serving engine cannot hold rows at different lengths in a {type(c).__name__}")
        self.slots: list[_Slot | None] = [None] * n_slots

    def busy(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is not None]

    @torch.no_grad()
    def admit(self, pairs: list[tuple[int, Request]]) -> list[int]:
        """Prefill each request and put it in its slot; returns the slots whose request is already done (its first
        token was the end, or it asked for one token)."""
        for slot, r in pairs:
            if self.slots[slot] is not None:
                raise BadInput(f"slot {slot} is busy")
            if len(r.prompt) + r.max_new_tokens > self.max_len:
                raise BadInput(f"request {r.id} needs {len(r.prompt) + r.max_new_tokens} tokens; a slot holds {self.max_len}")
        by_length = sorted(pairs, key=lambda p: len(p[1].prompt))
        for _, group in groupby(by_length, key=lambda p: len(p[1].prompt)):
            group = list(group)
            prompt = torch.tensor([r.prompt for _, r in group], device=self.device)
            pos = torch.tensor([r.prompt_pos for _, r in group], device=self.device)
            caches = self.model.new_caches(len(group), prompt.shape[1], self.device)
            first = self.model(prompt, pos, caches, start=0)[:, -1].argmax(-1).tolist()
            for j, (slot, r) in enumerate(group):
                self._put(slot, caches, j)
                self.slots[slot] = _Slot(r, [first[j]])
        return [slot for slot, _ in pairs if self.slots[slot].done]

    def _put(self, slot: int, caches: list, j: int) -> None:
        for dst, src in zip(self.caches, caches):
            if isinstance(dst, dict):  # the canon layer's last K - 1 embeddings
                if dst["past"] is None:
                    dst["past"] = src["past"].new_zeros(self.n_slots, *src["past"].shape[1:])
                dst["past"][slot] = src["past"][j]
            else:
                dst.put_row(slot, src, j)

    @torch.no_grad()
    def step(self) -> list[int]:
        """One token for every busy slot; returns the slots whose request finished with it."""
        busy = self.busy()
        if not busy:
            return []
        tokens, start, pos = [0] * self.n_slots, [0] * self.n_slots, [0] * self.n_slots  # idle slots read token 0 at 0
        for i in busy:
            s = self.slots[i]
            j = len(s.tokens) - 1  # the index of the token fed now among the request's new tokens
            tokens[i], start[i], pos[i] = s.tokens[-1], len(s.request.prompt) + j, s.request.pos_base + j
        as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)  # noqa: E731  (one copy each)
        nxt = self.model(as_tensor(tokens)[:, None], as_tensor(pos)[:, None], self.caches,
                         start=as_tensor(start))[:, -1].argmax(-1).tolist()
        self._clear([i for i in range(self.n_slots) if self.slots[i] is None])  # an idle row's write is dropped
        finished = []
        for i in busy:
            self.slots[i].tokens.append(nxt[i])
            if self.slots[i].done:
                finished.append(i)
        return finished

    def release(self, slot: int) -> list[int]:
        """Empty a slot; returns its request's tokens (up to and including the end token)."""
        s, self.slots[slot] = self.slots[slot], None
        self._clear([slot])
        return s.tokens

    def _clear(self, rows: list[int]) -> None:
        if not rows:
            return
        for c in self.caches:
            if isinstance(c, RowKVCache):
                c.clear_rows(torch.tensor(rows, device=self.device))
