"""Encoder-only next-token prediction (ENTP, Ewer et al. 2025) in one file.

A decoder predicts token t + 1 from a causal pass: token i's state at layer l only ever sees tokens
<= i, and is computed once for every later prediction. ENTP predicts token t + 1 from a fresh
bidirectional pass over tokens 1..t, so every token of the prefix attends to every other one at
every layer. The price is one forward pass per predicted position: training on a sequence costs
(number of scored positions) passes instead of one, and generation recomputes the whole prefix for
each new token (there is no cache to keep, since every state changes when a token arrives).

Scored positions are batched: prefix t of row b becomes one sequence of the batch, right-padded to the
longest prefix, with a key mask that hides the padding (the padding's own outputs are never read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqlab.core.errors import BadInput
from seqlab.core.targets import IGNORE
from seqlab.models.mixers.attention import SeqContext
from seqlab.models.decoder import Decoder, ModelConfig
from seqlab.models.positions import rope_cos_sin
from seqlab.models.registry import MODELS

ENCODER_POSITIONS = ("none", "learned", "rope")


@MODELS.register(name="encoder", description="encoder-only next-token prediction: a bidirectional pass over "
                                              "each prefix (Ewer et al. 2025)")
class EncoderNTP(Decoder):
    def __init__(self, config: ModelConfig, vocab_size: int):
        if config.position not in ENCODER_POSITIONS:
            raise BadInput(f"the encoder reads positions {', '.join(ENCODER_POSITIONS)}, not {config.position}")
        if any(m != "attention" for m in config.layer_mixers()):
            raise BadInput("the encoder attends in both directions: its layers must all be attention (model.mixers=attention)")
        super().__init__(config, vocab_size)

    def prefix_logits(self, tokens: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) of the token after tokens[rows[n], : ends[n] + 1], each from its own bidirectional pass."""
        c = self.config
        T = int(ends.max()) + 1
        seqs = tokens[rows, :T]  # (N, T); positions past ends[n] are masked out below
        N = seqs.shape[0]
        positions = torch.arange(T, device=tokens.device)[None].expand(N, T)
        x = self.tok_emb(seqs)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.hook_embed(x)  # (N, T, D): hook points see one row per prefix, not per input row
        rope = rope_cos_sin(positions[:1], c.d_model // c.n_heads, c.rope_base) if c.position == "rope" else None
        key_mask = (positions <= ends[:, None])[:, None, None, :]  # (N, 1, 1, T)
        ctx = SeqContext(positions=positions, rope=rope, key_mask=key_mask)
        for block in self.blocks:
            x = block(x, ctx)
        h = x[torch.arange(N, device=tokens.device), ends]  # (N, D): the last token of each prefix
        return self.head(self.norm(h))

    def forward(self, tokens: torch.Tensor, pos_ids=None, caches=None, start: int = 0) -> torch.Tensor:
        """Logits (B, L, V) at every position, each from the prefix that ends there (L passes per row)."""
        if caches is not None:
            raise BadInput("an encoder-only model keeps no cache: every new token changes every state")
        B, L = tokens.shape
        rows = torch.arange(B, device=tokens.device).repeat_interleave(L)
        ends = torch.arange(L, device=tokens.device).repeat(B)
        return self.prefix_logits(tokens, rows, ends).view(B, L, -1)

    def scored_logits(self, tokens: torch.Tensor, targets: torch.Tensor, pos_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        rows, ends = (targets != IGNORE).nonzero(as_tuple=True)
        if len(rows) == 0:
            return tokens.new_zeros(0, self.vocab_size, dtype=torch.float), targets.new_zeros(0)
        return self.prefix_logits(tokens, rows, ends), targets[rows, ends]

    def loss(self, tokens, targets, pos_ids=None) -> torch.Tensor:
        logits, y = self.scored_logits(tokens, targets)
        return F.cross_entropy(logits.float(), y)

    @torch.no_grad()
    def generate(self, prompt, prompt_pos, pos_base, max_new_tokens: int, eos: int, use_cache: bool = True,
                 pick=None) -> torch.Tensor:
        """Decoding (greedy, or `pick` as the decoder's), one full bidirectional pass over the prefix per new token."""
        B = prompt.shape[0]
        out = torch.full((B, max_new_tokens), eos, dtype=torch.long, device=prompt.device)
        done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
        tokens, rows = prompt, torch.arange(B, device=prompt.device)
        if pick is not None:
            pick.begin(B)
        for j in range(max_new_tokens):
            ends = torch.full((B,), tokens.shape[1] - 1, device=prompt.device)
            logits = self.prefix_logits(tokens, rows, ends)
            nxt = logits.argmax(-1) if pick is None else pick(logits, tokens)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            out[:, j] = nxt
            done |= nxt == eos
            if bool(done.all()):
                break
            tokens = torch.cat([tokens, nxt[:, None]], 1)
        return out
