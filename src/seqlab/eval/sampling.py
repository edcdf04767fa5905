"""Choosing the next token from logits: greedy, or sampled through the logits processors of
seqlab.eval.logits_processors, or with Mirostat's feedback on surprise.

`next_token_picker(...)` returns a `Sampler` that a model's `generate` calls at every step as
`pick(logits (B, V), context (B, T)) -> (B,)` token ids, where context holds the prompt and the tokens
written so far; None means greedy (argmax), which is what evaluation uses. `generate` calls
`pick.begin(B)` before the first step, so state kept per row (Mirostat's threshold) starts afresh for
every batch.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from pydantic import Field

from seqlab.core.configs import Config, parse_config
from seqlab.core.errors import BadInput
from seqlab.eval.logits_processors import (Epsilon, Eta, FrequencyPresencePenalty, MinP, RepetitionPenalty, Temperature,
                                           TopK, TopP, Typical)

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LN2 = math.log(2.0)


class Picker(Protocol):
    def begin(self, batch: int) -> None: ...

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


class SamplingConfig(Config):
    """How to pick the next token. temperature 0 is greedy (a filter, penalty or Mirostat is then refused: it
    would have no effect). The penalties apply first, then the temperature, then the filters in the order listed,
    then either a plain draw or Mirostat (`mirostat_tau`, in bits)."""

    temperature: float = Field(0.0, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    typical: float | None = Field(None, gt=0, le=1)
    epsilon: float | None = Field(None, ge=0, lt=1)
    eta: float | None = Field(None, ge=0, lt=1)
    mirostat_tau: float | None = Field(None, gt=0)  # target surprise in bits (Mirostat v2)
    mirostat_eta: float = Field(0.1, gt=0)  # its learning rate
    seed: int | None = None


class MirostatV2:
    """Mirostat 2.0 (Basu et al. 2021, Algorithm 2): keep the tokens whose surprise -log2 p is at most mu,
    draw from them renormalised, then move mu against the error of the drawn token's surprise:
    mu <- mu - eta (s - tau). mu starts at 2 tau. The surprise is measured on the distribution Mirostat is
    given (after temperature and filters), as in the paper's code; llama.cpp measures it after truncation."""

    def __init__(self, tau: float, eta: float):
        self.tau, self.eta = tau, eta
        self.mu: torch.Tensor | None = None

    def begin(self, batch: int, device) -> None:
        self.mu = torch.full((batch, 1), 2.0 * self.tau, device=device)

    def draw(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.mu is None or self.mu.shape[0] != logits.shape[0]:
            self.begin(logits.shape[0], logits.device)
        surprise = -logits.log_softmax(-1) / LN2  # (B, V) bits
        keep = surprise <= self.mu
        keep.scatter_(-1, logits.argmax(-1, keepdim=True), True)
        ids = torch.multinomial(logits.masked_fill(~keep, float("-inf")).softmax(-1), 1, generator=generator)
        self.mu = self.mu - self.eta * (surprise.gather(-1, ids) - self.tau)
        return ids[:, 0]


class Sampler:
    """Processors in order, then a draw (plain or Mirostat) with a generator of its own, so the global RNG is
    left alone and a seed makes the draws repeatable."""

    def __init__(self, processors: list[Processor], seed: int | None = None, mirostat: MirostatV2 | None = None):
        self.processors, self.seed, self.mirostat = processors, seed, mirostat
        self.generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device) -> torch.Generator:
        if device not in self.generators:
            g = self.generators[device] = torch.Generator(device=device)
            g.manual_seed(self.seed) if self.seed is not None else g.seed()
        return self.generators[device]

    def begin(self, batch: int) -> None:
        if self.mirostat is not None:
            self.mirostat.mu = None  # set to 2 tau, on the logits' device, at the first draw

    def filtered(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The logits after every processor (float32): what the draw samples from."""
        out = logits.float()
        for proc in self.processors:
            out = proc(out, context)
        return out

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self.filtered(logits, context)
        g = self._generator(out.device)
        if self.mirostat is not None:
            return self.mirostat.draw(out, g)
        return torch.multinomial(out.softmax(-1), 1, generator=g)[:, 0]


def processors_of(c: SamplingConfig) -> list[Processor]:
    procs: list[Processor] = []
    if c.repetition_penalty is not None and c.repetition_penalty != 1:
        procs.append(RepetitionPenalty(c.repetition_penalty))
    if c.frequency_penalty or c.presence_penalty:
        procs.append(FrequencyPresencePenalty(c.frequency_penalty, c.presence_penalty))
    if c.temperature != 1:
        procs.append(Temperature(c.temperature))
    for value, make in ((c.top_k, TopK), (c.top_p, TopP), (c.min_p, MinP), (c.typical, Typical),
                        (c.epsilon, Epsilon), (c.eta, Eta)):
        if value is not None:
            procs.append(make(value))
    return procs


def sampler_from(config: SamplingConfig | dict, first: tuple[Processor, ...] = ()) -> Sampler | None:
    """The sampler a config describes, with the processors `first` before the config's (a banned start token);
    None for greedy (temperature 0)."""
    c = config if isinstance(config, SamplingConfig) else parse_config(SamplingConfig, dict(config), prefix="sampling.")
    if c.temperature == 0:
        unused = [k for k, v in c.to_json().items() if k not in ("temperature", "seed", "mirostat_eta")
                  and v not in (None, 0.0)]
        if unused:
            raise BadInput(f"sampling: {', '.join(unused)} has no effect at temperature 0 (greedy); set a temperature")
        return None
    mirostat = MirostatV2(c.mirostat_tau, c.mirostat_eta) if c.mirostat_tau is not None else None
    return Sampler([*first, *processors_of(c)], c.seed, mirostat)


def next_token_picker(temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                      seed: int | None = None, **more) -> Sampler | None:
    """None (greedy) at temperature 0; otherwise sampling from softmax(logits / temperature), restricted to
    the `top_k` likeliest tokens and to the smallest set whose probability reaches `top_p`, and by any other
    knob of SamplingConfig given in `more` (min_p, typical, epsilon, eta, penalties, Mirostat)."""
    return sampler_from({"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, **more})


def greedy(logits: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """The reference picker: the likeliest token of each row."""
    return logits.argmax(-1)
