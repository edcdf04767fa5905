"""A decoder-only transformer in one file: pre-norm blocks, SDPA attention, GELU or SwiGLU MLP.

Position schemes (`ModelConfig.position`):
  none      NoPE: only the causal mask tells tokens apart (Kazemnejad et al. 2023)
  learned   a learned embedding per position id, added to the token embedding
  rope      rotary embeddings on queries and keys (Su et al. 2021)
  alibi     a linear distance penalty on attention scores (Press et al. 2022)
  abacus    a learned embedding of each digit's index within its number (McLeish et al. 2024)
  coupling  a learned embedding of each digit's significance (Cho et al. 2024)
  coupling_relative
            the same coupled ids, read as a learned attention bias per head on the id difference
            between query and key, clipped to [-relative_clip, relative_clip] (Cho et al.'s relative
            variant): no position embedding, so nothing depends on an id's absolute value
The last three read position ids made by the format; `learned` reads the standard ids 0, 1, 2, ...

`log_length_scale` (any scheme) multiplies attention logits by a learned s_h * log(keys seen),
scalable softmax (Nakanishi et al. 2025): without it, a key that wins among 20 on a training-length
input drowns among 100 on a long one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from seqlab.core.errors import BadInput
from seqlab.core.targets import IGNORE
from seqlab.models.block_config import BlockConfig
from seqlab.models.mixers.attention import CausalSelfAttention, SeqContext
from seqlab.models.fused import swiglu
from seqlab.models.hook_points import HookPoint
from seqlab.models.mixers.registry import MIXERS, make_mixer, restore_own_inits, with_mixer_settings
from seqlab.models.positions import rope_cos_sin
from seqlab.models.registry import MODELS

POSITIONS = ("none", "learned", "rope", "alibi", "abacus", "coupling", "coupling_relative")
# Which position ids each scheme needs from the format.
FORMAT_POSITION_IDS = {"abacus": "abacus", "coupling": "coupled", "coupling_relative": "coupled"}
# Schemes that look position ids up in a table of `max_positions` rows.
TABLE_POSITIONS = ("learned", "abacus", "coupling")
# The weights that write into the residual stream, initialised smaller with depth (GPT-2): attention's
# output projection, the MLP's down projection, a mixer's out_proj (Mamba, linear attention).
RESIDUAL_OUTPUTS = ("mixer.proj.weight", "mlp.down.weight", "out_proj.weight")


@with_mixer_settings
class ModelConfig(BlockConfig):
    """The decoder's (and the encoder's, arch=encoder): the block's settings, each mixer's section, and the
    embeddings and head around the blocks."""

    arch: str = "decoder"  # checked against the model registry
    position: Literal["none", "learned", "rope", "alibi", "abacus", "coupling", "coupling_relative"] = "rope"
    # Kernel size of a causal depthwise convolution over the embeddings ("canon layer", Allen-Zhu 2025);
    # 0 = none. With 2, each token carries the one before it from the first layer on, which is the
    # previous-token head that recall (an induction head) otherwise has to learn first.
    canon: int = 0
    max_positions: int = 1024  # size of the position table (learned, abacus, coupling)
    rope_base: float = 10000.0
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _check(self):
        if self.max_positions < 1:
            raise ValueError("max_positions must be positive")
        if self.canon < 0:
            raise ValueError("canon must be >= 0 (0: no convolution)")
        return self


def make_norm(kind: str, d: int) -> nn.Module:
    return nn.RMSNorm(d, eps=1e-6) if kind == "rmsnorm" else nn.LayerNorm(d, bias=False)


class MLP(nn.Module):
    def __init__(self, c: BlockConfig):
        super().__init__()
        self.swiglu = c.mlp == "swiglu"
        # SwiGLU's gate and up projections share one matmul.
        self.up = nn.Linear(c.d_model, (2 if self.swiglu else 1) * c.hidden, bias=c.bias)
        self.down = nn.Linear(c.hidden, c.d_model, bias=c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            h = swiglu(h)  # silu(gate) * up, with a backward that skips a concatenation
        else:
            h = F.gelu(h)
        return self.down(h)


class CanonConv(nn.Module):
    """A causal depthwise convolution of kernel K over the embeddings: token t mixes tokens t-K+1 .. t.
    Initialised as the identity on the current token plus a small random look back."""

    def __init__(self, d: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(d, d, kernel, groups=d, bias=False)
        self.kernel = kernel
        self.reset_special_parameters()

    def reset_special_parameters(self):
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.5)
            self.conv.weight[:, :, -1] = 1.0

    def init_cache(self) -> dict:
        return {"past": None}  # (B, K-1, D) once a prompt has been read

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, L, D = x.shape
        if cache is not None and cache["past"] is not None:
            padded = torch.cat([cache["past"], x], 1)
        else:
            padded = F.pad(x, (0, 0, self.kernel - 1, 0))
        if cache is not None:
            cache["past"] = padded[:, -(self.kernel - 1):] if self.kernel > 1 else padded[:, :0]
        return self.conv(padded.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)).

    Hook points (seqlab.analysis), each (B, L, D): hook_resid_pre (the block's input), hook_mixer_out
    (what the mixer adds to the stream, after dropout), hook_resid_mid (the stream between mixer and MLP),
    hook_mlp_out, hook_resid_post (the block's output). Without an MLP there is no resid_mid or mlp_out.
    """

    def __init__(self, c: BlockConfig, mixer: nn.Module):
        super().__init__()
        has_mlp = c.mlp != "none"
        # Registered in the order they run, so a model's hook names list in forward order. No hook point
        # holds a parameter or draws a random number: weights, their names and their init are unchanged.
        self.hook_resid_pre = HookPoint()
        self.norm1, self.mixer = make_norm(c.norm, c.d_model), mixer
        self.hook_mixer_out = HookPoint()
        self.hook_resid_mid = HookPoint() if has_mlp else None
        self.norm2, self.mlp = (make_norm(c.norm, c.d_model), MLP(c)) if has_mlp else (None, None)
        self.hook_mlp_out = HookPoint() if has_mlp else None
        self.hook_resid_post = HookPoint()
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, ctx: SeqContext, cache=None):
        x = self.hook_resid_pre(x)
        x = x + self.hook_mixer_out(self.drop(self.mixer(self.norm1(x), ctx, cache)))
        if self.mlp is None:
            return self.hook_resid_post(x)
        x = self.hook_resid_mid(x)
        return self.hook_resid_post(x + self.hook_mlp_out(self.drop(self.mlp(self.norm2(x)))))


@MODELS.register(name="decoder", description="decoder-only backbone; mixers per layer (model.mixers): "
                 + ", ".join(MIXERS) + "; positions: " + ", ".join(POSITIONS))
class Decoder(nn.Module):
    inputs = "tokens"  # token ids (see models/registry.py)

    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        c = self.config = config
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.max_positions, c.d_model) if c.position in TABLE_POSITIONS else None
        self.canon = CanonConv(c.d_model, c.canon) if c.canon else None
        self.hook_embed = HookPoint()  # (B, L, D): what the first block reads (embeddings, canon, positions)
        self.blocks = nn.ModuleList(Block(c, make_mixer(name, c)) for name in c.layer_mixers())
        self.norm = make_norm(c.norm, c.d_model)
        self.head = nn.Linear(c.d_model, vocab_size, bias=False)
        if c.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(RESIDUAL_OUTPUTS):
                nn.init.normal_(p, std=0.02 / (2 * c.n_layers) ** 0.5)
        restore_own_inits(self)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self, seq_len: int) -> int:
        return sum(b.mixer.state_size(seq_len) for b in self.blocks)

    def hidden(self, tokens: torch.Tensor, pos_ids: torch.Tensor | None = None, caches=None,
               start: int | torch.Tensor = 0, layer_outputs: list | None = None, upto: int | None = None) -> torch.Tensor:
        """The final normalised hidden states (B, L, D), before the head. `start` is the index of the first token in
        its sequence: one int for the batch, or one per row (B,) where rows are at different lengths (the serving
        engine's slots, on RowKVCache). `layer_outputs`, where given, gets each block's output (the residual stream
        (B, L, D) after it), for early exits; `upto` runs only the first blocks (a self-speculative draft)."""
        B, L = tokens.shape
        c = self.config
        per_row = isinstance(start, torch.Tensor)
        if per_row:
            positions = start[:, None] + torch.arange(L, device=tokens.device)
        else:
            positions = torch.arange(start, start + L, device=tokens.device)[None].expand(B, L)
        x = self.tok_emb(tokens)  # (B, L, D)
        if self.canon is not None:  # decoding: caches[-1] holds the embeddings of the last canon - 1 tokens
            x = self.canon(x, None if caches is None else caches[-1])
        ids = positions if pos_ids is None else pos_ids
        if self.pos_emb is not None:
            x = x + self.pos_emb(ids)
        x = self.hook_embed(x)
        rows = positions if per_row else positions[:1]  # the rope tables for each row, or one for all
        rope = rope_cos_sin(rows, c.d_model // c.n_heads, c.rope_base) if c.position == "rope" else None
        ctx = SeqContext(positions=positions, rope=rope, pos_ids=ids if c.position == "coupling_relative" else None)
        for i, block in enumerate(self.blocks[:upto]):
            x = block(x, ctx, None if caches is None else caches[i])
            if layer_outputs is not None:
                layer_outputs.append(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, pos_ids: torch.Tensor | None = None, caches=None,
                start: int | torch.Tensor = 0) -> torch.Tensor:
        """Logits (B, L, V) for tokens (B, L). `pos_ids` are the format's position ids; `start` is
        the index of the first token in its sequence (non-zero when decoding with `caches`)."""
        return self.head(self.hidden(tokens, pos_ids, caches, start))

    def scored_logits(self, tokens: torch.Tensor, targets: torch.Tensor, pos_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, V) and targets (N,) at the N positions whose target is not IGNORE. The head runs
        there only: with a vocabulary of 8,192 and 4 scored positions in 64 (MQAR), that is most of the work."""
        keep = targets != IGNORE
        return self.head(self.hidden(tokens, pos_ids)[keep]), targets[keep]

    def loss(self, tokens, targets, pos_ids=None) -> torch.Tensor:
        """Mean cross-entropy over target positions (targets of IGNORE are skipped)."""
        logits, wanted = self.scored_logits(tokens, targets, pos_ids)
        return F.cross_entropy(logits.float(), wanted)

    def new_caches(self, batch: int, max_len: int, device, kv_cache=None) -> list:
        """One decoding cache per block (and the canon layer's, last). `kv_cache(layer, batch, n_heads,
        head_dim)` makes an attention layer's cache (seqlab.models.kvcache); the default is the full one."""
        dtype = self.tok_emb.weight.dtype
        caches = []
        for i, b in enumerate(self.blocks):
            if kv_cache is not None and isinstance(b.mixer, CausalSelfAttention):
                caches.append(kv_cache(i, batch, b.mixer.n_heads, b.mixer.head_dim))
            else:
                caches.append(b.mixer.init_cache(batch, max_len, device, dtype))
        if self.canon is not None:
            caches.append(self.canon.init_cache())
        return caches

    def select_cache_rows(self, caches: list, rows: torch.Tensor) -> None:
        """Keep the sequences `rows` (B',) of every cache, in that order: beam search follows its beams' parents.
        The model's own caches only (a compressed cache of seqlab.models.kvcache keeps no such contract)."""
        for c in caches:
            if isinstance(c, dict):  # the canon layer's
                c["past"] = None if c["past"] is None else c["past"][rows]
            elif hasattr(c, "select_rows"):
                c.select_rows(rows)
            else:
                raise BadInput(f"a {type(c).__name__} cannot follow beams: beam search runs on the model's own caches")

    def snapshot_caches(self, caches: list) -> list:
        """Every cache's state, for restore_caches to go back to (speculative decoding drops rejected tokens).
        Attention's preallocated cache needs only its length; a recurrent state is copied."""
        out = []
        for c in caches:
            if isinstance(c, dict):
                out.append(None if c["past"] is None else c["past"].clone())
            elif hasattr(c, "snapshot"):
                out.append(c.snapshot())
            else:
                raise BadInput(f"a {type(c).__name__} cannot be rewound: speculative decoding runs on the model's own caches")
        return out

    def restore_caches(self, caches: list, states: list) -> None:
        for c, state in zip(caches, states):
            if isinstance(c, dict):
                c["past"] = None if state is None else state.clone()
            else:
                c.restore(state)

    @torch.no_grad()
    def generate(self, prompt, prompt_pos, pos_base, max_new_tokens: int, eos: int, use_cache: bool = True,
                 pick=None, kv_cache=None) -> torch.Tensor:
        """Decoding for a batch of prompts of equal length: greedy, or `pick(logits (B, V), context (B, T)) -> (B,)`
        ids, context being the prompt and the tokens written so far (seqlab.eval.sampling; `pick.begin(B)` is
        called first). `kv_cache` makes each attention layer's cache (see new_caches).

        prompt, prompt_pos: (B, Lp); pos_base: (B,), the position id of the first new token.
        Returns (B, max_new_tokens); rows that finished early are filled with `eos`.
        """
        B, Lp = prompt.shape
        out = torch.full((B, max_new_tokens), eos, dtype=torch.long, device=prompt.device)
        done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
        tokens, pos = prompt, prompt_pos
        if pick is not None:
            pick.begin(B)
        caches = None
        if use_cache:
            caches = self.new_caches(B, Lp + max_new_tokens, prompt.device, kv_cache)
            logits = self(prompt, prompt_pos, caches, start=0)
        for j in range(max_new_tokens):
            if not use_cache:
                logits = self(tokens, pos)
            nxt = logits[:, -1].argmax(-1) if pick is None else pick(logits[:, -1], torch.cat([prompt, out[:, :j]], 1))
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            out[:, j] = nxt
            done |= nxt == eos
            if bool(done.all()) or j == max_new_tokens - 1:
                break
            new_pos = (pos_base + j)[:, None]
            if use_cache:
                logits = self(nxt[:, None], new_pos, caches, start=Lp + j)
            else:
                tokens = torch.cat([tokens, nxt[:, None]], 1)
                pos = torch.cat([pos, new_pos], 1)
        return out
