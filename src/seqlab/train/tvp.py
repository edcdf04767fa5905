"""The task vector prompting loss (TVP-loss) of Yang, Lin, Lee, Papailiopoulos and Nowak 2025, "Task Vectors
in In-Context Learning: Emergence, Formation, and Benefits" (arXiv 2501.09240).

Their abstract: task vectors formed by models trained from scratch are often "weakly and/or non-locally
encoded"; "to promote strong task vectors encoded at a prescribed location within the model, we propose an
auxiliary training mechanism based on a task vector prompting loss (TVP-loss)". The body of the paper (its
equation, layer and weight) could not be read where seqlab was built, so this follows the definition seqlab's
issue gives, and says where it chooses:

    loss = L_icl(prompt) + weight * L_zero-shot(query, with h_layer(prompt at its query's "→") injected)

- L_icl is the usual next-token loss on the demonstration prompt "x_1 → y_1 , ... , x_q → y_q , <eos>".
- h is the residual stream after block `layer` at the prompt's last "→", one vector per prompt (the
  per-prompt task vector), kept in the graph: the zero-shot loss trains the layers that form it as well as
  the ones that read it.
- The zero-shot query is the prompt's own last line, "x_q → y_q , <eos>", with h written over block `layer`'s
  output at its "→" (replaced, as task vectors are injected at evaluation); L_zero-shot is the next-token
  loss on its answer.

Both passes run on the same model; the objective replaces `model.loss` in the trainer, and the checkpoint
holds the model alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from seqlab.core.configs import Config
from seqlab.core.targets import IGNORE


class TVPConfig(Config):
    layer: int = Field(1, ge=0)  # the block whose output carries the task vector (0-based)
    weight: float = Field(1.0, ge=0)  # of the zero-shot loss


def last_query(tokens: torch.Tensor, targets: torch.Tensor, arrow_id: int, sep_id: int, pad_id: int = 0):
    """Each row's last line as its own sequence, left-aligned: (tokens (B, Lz), targets (B, Lz), the arrow's
    index in the prompt (B,), the arrow's index in the line (B,)). A line starts after the last separator."""
    B, L = tokens.shape
    idx = torch.arange(L, device=tokens.device).expand(B, L)
    arrow = torch.where(tokens == arrow_id, idx, -1).max(1).values  # the last "→" of each row
    sep = torch.where((tokens == sep_id) & (idx < arrow[:, None]), idx, -1).max(1).values
    start = sep + 1  # 0 for a prompt with no demonstrations
    length = (tokens != pad_id).sum(1) - start
    Lz = int(length.max())
    take = (start[:, None] + torch.arange(Lz, device=tokens.device)).clamp_max(L - 1)  # (B, Lz)
    inside = torch.arange(Lz, device=tokens.device)[None] < length[:, None]
    line = torch.where(inside, tokens.gather(1, take), torch.full_like(take, pad_id))
    line_targets = torch.where(inside, targets.gather(1, take), torch.full_like(take, IGNORE))
    return line, line_targets, arrow, arrow - start


def _hook_point(model, layer: int):
    return model.get_submodule(f"blocks.{layer}.hook_resid_post")


class TVPObjective:
    """loss(tokens, targets) = the prompt's loss + weight * the zero-shot loss with its task vector injected."""

    def __init__(self, model, config: TVPConfig, arrow_id: int, sep_id: int, pad_id: int = 0):
        if config.layer >= len(model.blocks):
            raise ValueError(f"tvp.layer {config.layer} is past the model's last block ({len(model.blocks) - 1})")
        self.model, self.c = model, config
        self.arrow_id, self.sep_id, self.pad_id = arrow_id, sep_id, pad_id

    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        point = _hook_point(self.model, self.c.layer)
        seen: dict[str, torch.Tensor] = {}

        def keep(x, hook):  # in the graph: the zero-shot loss reaches the layers that made x
            seen["h"] = x

        point.fns.append(keep)
        try:
            icl = self.model.loss(tokens, targets)
        finally:
            point.fns.remove(keep)
        line, line_targets, arrow, line_arrow = last_query(tokens, targets, self.arrow_id, self.sep_id, self.pad_id)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        vectors = seen["h"][rows, arrow]  # (B, D): each prompt's task vector

        def inject(x, hook):
            out = x.clone()
            out[rows, line_arrow] = vectors.to(x.dtype)
            return out

        point.fns.append(inject)
        try:
            logits, wanted = self.model.scored_logits(line, line_targets)
        finally:
            point.fns.remove(inject)
        return icl + self.c.weight * F.cross_entropy(logits.float(), wanted)
