"""Predictive Pipelined Decoding (Yang, Lee, Cho, Papailiopoulos, Lee, TMLR 2024), on a logical clock.

A decoder of N blocks computes token t in N layer-steps. PPD reads the early exit after block d (d < N) of
token t: while blocks d+1 .. N of token t still run, k branches start computing token t+1, one per candidate of
the exit's top-k. When token t's last block gives the true next token, the branch that guessed it is kept and
the others are dropped. Token t+1 then started d layer-steps after token t instead of N, and every layer of a
branch reads token t's keys and values at that layer, which token t computed earlier: the pipeline is sound.

Two CPU cores cannot show k-way parallel wall time honestly, so time is counted in layer-steps:

- critical path: token j starts at s_j (s_1 = 0); s_{j+1} = s_j + d where token j's exit guessed right, s_j + N
  where it did not; the last token's output is known at s_last + N. Sequential decoding takes N per token.
- layer computations: N per token, plus N - d for each dropped branch (it ran from block 1 until token t finished).

The analytic model (`analytic_layer_steps`) gives the expected critical path from a match rate p alone:
N + (T - 1) (p d + (1 - p) N) for T tokens. Here the branches are computed for real, one after another from the
same cache state (`Decoder.snapshot_caches`), and the kept branch's logits and cache are what decoding goes on
with, so the test that the output equals greedy decoding checks the branches' bookkeeping, not a copy of greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.core.errors import BadInput
from seqlab.serve.early_exit import ExitHeads, exit_logits


@dataclass
class PPDStats:
    n_layers: int
    exit_layer: int  # d: blocks before the exit
    top_k: int
    tokens: int = 0  # generated tokens (their forward passes, after the prompt's)
    matched: int = 0  # tokens whose successor a branch guessed
    critical_path: int = 0  # layer-steps until the last token is known
    layer_computations: int = 0

    @property
    def match_rate(self) -> float:
        launches = self.tokens - 1
        return self.matched / launches if launches > 0 else float("nan")

    @property
    def sequential_layer_steps(self) -> int:
        return self.tokens * self.n_layers

    @property
    def saved(self) -> float:
        """Share of the sequential critical path saved."""
        return 1 - self.critical_path / self.sequential_layer_steps if self.tokens else float("nan")


def analytic_layer_steps(tokens: int, n_layers: int, exit_layer: int, match_rate: float) -> float:
    """The expected critical path of PPD for `tokens` tokens at match rate p."""
    return n_layers + (tokens - 1) * (match_rate * exit_layer + (1 - match_rate) * n_layers)


def _step(model, token: int, pos_id: int, start: int, caches, exit_layer: int, heads, top_k: int):
    """One token through the model: (greedy next token, the exit's top-k candidates for it)."""
    dev = model.tok_emb.weight.device
    outs: list[torch.Tensor] = []
    h = model.hidden(torch.tensor([[token]], device=dev), torch.tensor([[pos_id]], device=dev), caches, start,
                     layer_outputs=outs)
    nxt = int(model.head(h)[0, -1].argmax())
    guess = exit_logits(model, exit_layer - 1, outs[exit_layer - 1][0, -1], heads).topk(top_k).indices.tolist()
    return nxt, guess


@torch.no_grad()
def ppd_generate(model, prompt: torch.Tensor, prompt_pos: torch.Tensor, pos_base: torch.Tensor, max_new_tokens: int,
                 eos: int, exit_layer: int, top_k: int = 1, heads: ExitHeads | None = None) -> tuple[torch.Tensor, PPDStats]:
    """Greedy decoding of one prompt (1, Lp) by PPD: tokens (1, max_new_tokens) eos-filled as Decoder.generate
    writes them, and the clock's counts. `exit_layer` d in 1 .. N - 1; `heads` the trained exits (None: the
    logit lens)."""
    N = len(model.blocks)
    if prompt.shape[0] != 1:
        raise BadInput("PPD decodes one prompt at a time")
    if not 1 <= exit_layer < N:
        raise BadInput(f"exit_layer must lie in 1 .. {N - 1} for a model of {N} blocks, got {exit_layer}")
    if top_k < 1 or max_new_tokens < 1:
        raise BadInput("top_k and max_new_tokens must be at least 1")
    Lp, dev = prompt.shape[1], prompt.device
    caches = model.new_caches(1, Lp + max_new_tokens + 1, dev)
    y = int(model(prompt, prompt_pos, caches, start=0)[0, -1].argmax())  # the prefill: before the clock starts
    stats = PPDStats(N, exit_layer, top_k)
    out, base = [y], int(pos_base[0])
    ready = None  # (next token, candidates) of the newest token, where a kept branch computed it already
    start_time = 0
    while len(out) < max_new_tokens and out[-1] != eos:
        j = len(out) - 1  # index among the generated tokens of the token now read
        x = out[-1]
        if ready is None:
            ready = _step(model, x, base + j, Lp + j, caches, exit_layer, heads, top_k)
        nxt, guesses = ready
        stats.tokens += 1
        stats.layer_computations += N
        stats.critical_path = start_time + N
        out.append(nxt)
        if len(out) >= max_new_tokens or nxt == eos:
            break
        # Branches for the token after x, one per guess, each from the state after x; the right one is kept.
        after_x, ready, kept_state = model.snapshot_caches(caches), None, None
        # The right guess runs last: attention's snapshot is a length, and a later branch would overwrite the
        # kept branch's keys in the slot they share.
        for g in sorted(guesses, key=lambda g: g == nxt):
            model.restore_caches(caches, after_x)
            result = _step(model, g, base + j + 1, Lp + j + 1, caches, exit_layer, heads, top_k)
            if g == nxt:
                ready, kept_state = result, model.snapshot_caches(caches)
        model.restore_caches(caches, kept_state if kept_state is not None else after_x)
        wrong = len(guesses) - (ready is not None)
        stats.layer_computations += wrong * (N - exit_layer)
        stats.matched += ready is not None
        start_time += exit_layer if ready is not None else N
    tokens = torch.full((1, max_new_tokens), eos, dtype=torch.long, device=dev)
    tokens[0, :len(out)] = torch.tensor(out, device=dev)
    return tokens, stats
