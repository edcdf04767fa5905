"""Speculative decoding under greedy (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes
`gamma` tokens one at a time, the target model scores all of them in one pass, and the longest prefix the target
agrees with is kept, followed by the target's own next token. Every kept token is the target's greedy choice
after the tokens before it, so the output is exactly greedy decoding of the target; what changes is the number
of sequential target passes, which `SpeculativeStats` counts.

After a rejection both models go back to the state before the proposal (`Decoder.snapshot_caches`) and read the
kept tokens again: exact for every mixer (a recurrent state cannot drop its last tokens otherwise), at the cost of
re-reading, which the counts include. One prompt at a time: rows of a batch would accept different numbers of
tokens and fall out of step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.core.errors import BadInput


@dataclass
class SpeculativeStats:
    target_passes: int = 0  # sequential target forward calls (the prefill, proposals scored, re-reads)
    target_tokens: int = 0  # token positions the target computed
    draft_passes: int = 0
    draft_tokens: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")


class _Counted:
    """A model and its caches, with every forward counted."""

    def __init__(self, model, caches, stats: SpeculativeStats, who: str):
        self.model, self.caches, self.stats, self.who = model, caches, stats, who

    def __call__(self, tokens: list[int], pos: list[int], start: int) -> torch.Tensor:
        dev = self.model.tok_emb.weight.device
        t = torch.tensor([tokens], device=dev)
        logits = self.model(t, torch.tensor([pos], device=dev), self.caches, start=start)[0]  # (L, V)
        setattr(self.stats, f"{self.who}_passes", getattr(self.stats, f"{self.who}_passes") + 1)
        setattr(self.stats, f"{self.who}_tokens", getattr(self.stats, f"{self.who}_tokens") + len(tokens))
        return logits

    def snapshot(self):
        return self.model.snapshot_caches(self.caches)

    def reread(self, state, tokens: list[int], pos: list[int], start: int) -> None:
        self.model.restore_caches(self.caches, state)
        self(tokens, pos, start)


@torch.no_grad()
def speculative_generate(target, draft, prompt: torch.Tensor, prompt_pos: torch.Tensor, pos_base: torch.Tensor,
                         max_new_tokens: int, eos: int, gamma: int = 4) -> tuple[torch.Tensor, SpeculativeStats]:
    """Greedy decoding of `target` for one prompt (1, Lp), drafted by `draft` (same vocabulary): the tokens
    (1, max_new_tokens), eos-filled after eos as Decoder.generate writes them, and the counts."""
    if prompt.shape[0] != 1:
        raise BadInput("speculative decoding takes one prompt at a time (rows would accept different numbers of tokens)")
    if gamma < 1 or max_new_tokens < 1:
        raise BadInput(f"gamma and max_new_tokens must be at least 1, got {gamma} and {max_new_tokens}")
    if draft.vocab_size != target.vocab_size:
        raise BadInput(f"the draft's vocabulary ({draft.vocab_size}) is not the target's ({target.vocab_size})")
    Lp, dev = prompt.shape[1], prompt.device
    room = Lp + max_new_tokens + gamma + 1
    stats = SpeculativeStats()
    tgt = _Counted(target, target.new_caches(1, room, dev), stats, "target")
    drf = _Counted(draft, draft.new_caches(1, room, dev), stats, "draft")
    p, pp, base = prompt[0].tolist(), prompt_pos[0].tolist(), int(pos_base[0])
    x = int(tgt(p, pp, 0)[-1].argmax())
    drf(p, pp, 0)
    out, fed = [x], Lp  # fed: tokens both models have read (the prompt, then the kept tokens but the newest)

    def pos(first: int, n: int) -> list[int]:  # position ids of sequence indices first .. first + n - 1
        return [base + first - Lp + i for i in range(n)]

    while len(out) < max_new_tokens and out[-1] != eos:
        g = min(gamma, max_new_tokens - len(out))
        draft_state, proposal, tok = drf.snapshot(), [], x
        for i in range(g):  # the draft reads x, d_1 .. d_{g-1} and proposes d_1 .. d_g
            tok = int(drf([tok], pos(fed + i, 1), fed + i)[-1].argmax())
            proposal.append(tok)
        target_state = tgt.snapshot()
        seq = [x] + proposal
        wanted = tgt(seq, pos(fed, g + 1), fed).argmax(-1).tolist()  # wanted[i]: the target's token after seq[:i + 1]
        n = 0
        while n < g and proposal[n] == wanted[n]:
            n += 1
            if proposal[n - 1] == eos:  # an accepted end: nothing after it is read, so no model needs to rewind
                break
        stats.proposed += g
        stats.accepted += n
        if n and proposal[n - 1] == eos:
            out += proposal[:n]
            break
        kept = seq[:n + 1]  # what both models must have read before the next round: x, d_1 .. d_n
        if n < g:
            tgt.reread(target_state, kept, pos(fed, n + 1), fed)
        if n + 1 < g:
            drf.reread(draft_state, kept, pos(fed, n + 1), fed)
        elif n == g:  # the draft read x .. d_{g-1}; d_g too
            drf([proposal[-1]], pos(fed + g, 1), fed + g)
        fed += n + 1
        new = proposal[:n] + [wanted[n]]
        out += new
        x = new[-1]
    out = out[:max_new_tokens]
    if eos in out:
        out = out[:out.index(eos) + 1]
    tokens = torch.full((1, max_new_tokens), eos, dtype=torch.long, device=dev)
    tokens[0, :len(out)] = torch.tensor(out, device=dev)
    return tokens, stats
