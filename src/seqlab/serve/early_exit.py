"""Early exits: a next-token prediction from the residual stream after an intermediate block.

Two kinds, both on a frozen decoder:

- the logit lens: the model's own final norm and head applied to block l's output (no training);
- trained exit heads (`ExitHeads`): per block, a linear map of the residual (identity at the start) into the
  frozen final norm and head, trained to match the model's own next-token distribution (KL to the last layer),
  as exit heads trained on a frozen model are.

`match_rates` measures, per block, how often the exit's top-k holds the model's greedy token: the quantity
pipelined and self-speculative decoding live on.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class ExitHeads(nn.Module):
    """One exit per block but the last (the last is the model's own head)."""

    def __init__(self, d_model: int, n_layers: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers - 1))
        for m in self.maps:
            nn.init.eye_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, model, layer: int, resid: torch.Tensor) -> torch.Tensor:
        return model.head(model.norm(self.maps[layer](resid)))


def exit_logits(model, layer: int, resid: torch.Tensor, heads: ExitHeads | None = None) -> torch.Tensor:
    """Logits (..., V) of the exit after block `layer` (0-based) from that block's output."""
    if layer == len(model.blocks) - 1:
        return model.head(model.norm(resid))
    return heads(model, layer, resid) if heads is not None else model.head(model.norm(resid))


def all_exits(model, tokens: torch.Tensor, pos: torch.Tensor, heads: ExitHeads | None = None) -> list[torch.Tensor]:
    """Every block's exit logits (B, L, V), the last being the model's own."""
    outs: list[torch.Tensor] = []
    model.hidden(tokens, pos, layer_outputs=outs)
    return [exit_logits(model, i, r, heads) for i, r in enumerate(outs)]


def train_exit_heads(model, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], steps: int,
                     lr: float = 1e-3) -> ExitHeads:
    """Exit heads for a frozen model: `batches(step)` gives (tokens, pos, mask) with mask (B, L) the positions to
    learn at; each exit minimises KL(last layer || exit) there."""
    heads = ExitHeads(model.config.d_model, len(model.blocks)).to(model.tok_emb.weight.device)
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(heads.parameters(), lr=lr)
    try:
        for step in range(steps):
            tokens, pos, mask = batches(step)
            with torch.no_grad():
                outs: list[torch.Tensor] = []
                final = model.head(model.hidden(tokens, pos, layer_outputs=outs))[mask].float().log_softmax(-1)
            loss = sum(F.kl_div(heads(model, i, r[mask]).float().log_softmax(-1), final, log_target=True,
                                reduction="batchmean") for i, r in enumerate(outs[:-1]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return heads.eval()


@torch.no_grad()
def match_rates(model, tokens: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, heads: ExitHeads | None = None,
                top_k: int = 1) -> list[float]:
    """Per block: the share of masked positions where the exit's top-k holds the model's greedy token."""
    exits = all_exits(model, tokens, pos, heads)
    greedy = exits[-1][mask].argmax(-1, keepdim=True)  # (N, 1)
    return [float((e[mask].topk(top_k, dim=-1).indices == greedy).any(-1).float().mean()) for e in exits]
