"""Self-speculative decoding (LayerSkip, Elhoushi et al. 2024; `assistant_early_exit` in transformers): the draft is
the model's own first d blocks read through an early exit, so no second model is trained or stored. It plugs into
speculative_generate as any draft does, and the output is the full model's greedy decoding whatever the exit.

The draft keeps its own caches for its d blocks (LayerSkip shares them with the verifying pass to save compute; a
separate copy costs the draft's d layers again per token but keeps the two rewinds independent, and the count of
layer computations below includes it)."""

from __future__ import annotations

import torch
import torch.nn as nn

from seqlab.core.errors import BadInput
from seqlab.serve.early_exit import ExitHeads, exit_logits
from seqlab.serve.speculative import SpeculativeStats, speculative_generate


class EarlyExitDraft(nn.Module):
    """The first `exit_layer` blocks of `model` and the exit after them, as a decoder with Decoder's decoding calls."""

    def __init__(self, model, exit_layer: int, heads: ExitHeads | None = None):
        super().__init__()
        if not 1 <= exit_layer < len(model.blocks):
            raise BadInput(f"exit_layer must lie in 1 .. {len(model.blocks) - 1}, got {exit_layer}")
        self.model, self.exit_layer, self.heads = model, exit_layer, heads
        self.vocab_size, self.tok_emb, self.blocks = model.vocab_size, model.tok_emb, model.blocks[:exit_layer]

    def new_caches(self, batch: int, max_len: int, device, kv_cache=None) -> list:
        return self.model.new_caches(batch, max_len, device, kv_cache)  # blocks past the exit leave theirs untouched

    def snapshot_caches(self, caches):
        return self.model.snapshot_caches(caches)

    def restore_caches(self, caches, states):
        self.model.restore_caches(caches, states)

    def forward(self, tokens, pos_ids=None, caches=None, start=0) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        self.model.hidden(tokens, pos_ids, caches, start, layer_outputs=outs, upto=self.exit_layer)
        return exit_logits(self.model, self.exit_layer - 1, outs[-1], self.heads)


def self_speculative_generate(model, prompt, prompt_pos, pos_base, max_new_tokens: int, eos: int, exit_layer: int,
                              gamma: int = 4, heads: ExitHeads | None = None) -> tuple[torch.Tensor, SpeculativeStats]:
    return speculative_generate(model, EarlyExitDraft(model, exit_layer, heads), prompt, prompt_pos, pos_base,
                                max_new_tokens, eos, gamma)


def layer_steps(stats: SpeculativeStats, target_layers: int, draft_layers: int) -> dict[str, int]:
    """Speculative decoding on the layer-step clock: each sequential pass costs its model's depth on the critical
    path (the tokens of one verifying pass go through the layers together); computations count every token."""
    return {"critical_path": stats.target_passes * target_layers + stats.draft_passes * draft_layers,
            "layer_computations": stats.target_tokens * target_layers + stats.draft_tokens * draft_layers}
