"""Task vectors: the hidden state at which an in-context prompt says which task it shows.

Hendel et al. 2023 found that a language model's residual stream at the last token of "x_1 → y_1, ...,
x_q →" (the query's "→"), at some middle layer, holds the task: averaged over prompts of one task and
written into the same place of a prompt with no demonstrations ("x_q →"), it makes the model answer as if
it had seen them. Yang et al. 2025 study when such vectors form in models trained from scratch; the code of
the task-superposition study (Xiong et al. 2024) reads them the same way, at `resid_post` of every layer
at the final separator, averaged over 100 prompts, and injects by replacing that activation.

Here, with L = the number of blocks:
  states_at        the residual stream after blocks `layers` at one position per row: (len(layers), B, D)
  task_vectors     their mean over prompts: (len(layers), D), one vector per layer
  injecting        a context in which block `layer`'s output at given positions is replaced by a vector
  teacher_forced   per row, whether every scored target is the model's argmax (what greedy decoding
                   would write, token by token) and the log-probability of the scored targets

Scoring by teacher forcing instead of generating keeps an injection to one forward pass: the vector goes
in at the query's "→", and the answer's tokens are read off the same pass.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from seqlab.analysis.hooks import hooks, run_with_cache
from seqlab.analysis.patching import patch_vector
from seqlab.core.targets import IGNORE


def resid_post(layer: int) -> str:
    """The hook point of the residual stream after block `layer` (0-based)."""
    return f"blocks.{layer}.hook_resid_post"


@torch.no_grad()
def states_at(model, tokens: torch.Tensor, positions: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """The residual stream after each of `layers` at `positions` (B,) of `tokens` (B, L): (len(layers), B, D)."""
    names = [resid_post(layer) for layer in layers]
    _, cache = run_with_cache(model, tokens, names=names)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    return torch.stack([cache[name][rows, positions] for name in names])


@torch.no_grad()
def task_vectors(model, tokens: torch.Tensor, positions: torch.Tensor, layers: list[int] | None = None,
                 batch: int = 256) -> torch.Tensor:
    """The mean over prompts of `states_at`: one task vector per layer, (len(layers), D)."""
    layers = list(range(len(model.blocks))) if layers is None else layers
    total = None
    for s in range(0, tokens.shape[0], batch):
        part = states_at(model, tokens[s:s + batch], positions[s:s + batch], layers).sum(1)
        total = part if total is None else total + part
    return total / tokens.shape[0]


@contextlib.contextmanager
def injecting(model, layer: int, vectors: torch.Tensor, positions: torch.Tensor | int):
    """Within the block, block `layer`'s output at `positions` is `vectors` ((D,) or (B, D)), replaced."""
    with hooks(model, {resid_post(layer): patch_vector(vectors, positions, mode="replace")}):
        yield model


@torch.no_grad()
def teacher_forced(model, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(right (B,) bool, logprob (B,)): whether every scored target of a row is the argmax of the model's
    prediction there, and the summed log-probability of the scored targets (log P of the answer string)."""
    model.eval()
    logits = model(tokens).float()  # (B, L, V)
    scored = targets != IGNORE
    wanted = targets.clamp_min(0)
    logp = F.log_softmax(logits, -1).gather(-1, wanted[..., None])[..., 0]  # (B, L)
    hit = logits.argmax(-1) == wanted
    right = (hit | ~scored).all(1)
    return right, (logp * scored).sum(1)
