"""Eviction caches: keep some tokens' keys and values exactly (16 bits), drop the rest.

- `WindowCache`: the most recent `window` tokens.
- `SnapKVCache`: SnapKV (Li et al. 2024, "SnapKV: LLM Knows What You are Looking for Before Generation").
  The prompt is compressed once, at prefill, with the rule of the authors' code (FasterDecoding/SnapKV,
  snapkv/monkeypatch/snapkv_utils.py, `SnapKVCluster.update_kv`; the same rule is in Zefan-Cai/PyramidKV
  and NVIDIA kvpress's `SnapKVPress`):
    1. the last `window` prompt queries attend causally over the whole prompt, softmax(q.k / sqrt(hd))
       in float32, each query normalised over every key it sees (the window's own keys included);
    2. those weights over the first Lp - window keys are summed over the window's queries (kvpress takes
       the mean, which ranks the same);
    3. the sums are pooled along the key axis, avg_pool1d or max_pool1d with `kernel`, stride 1 and
       padding kernel // 2 (zeros counted by the average), so the kernel must be odd to keep the length;
    4. each head keeps its top (budget - window) of those keys, plus the last `window` tokens.
  A prompt of at most `budget` tokens is kept whole (the authors' code keeps it whole below the budget;
  at exactly the budget both keep every token). Tokens after the prompt are all kept: SnapKV compresses
  the prompt only.
- `PyramidKVCache`: SnapKV with a per-layer budget from `pyramid_budgets`, PyramidKV's schedule (Cai et
  al. 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling").

Two choices differ from the reference code, neither changes an output: kept prompt tokens stay in their
prompt order (the reference stores them in score order), and there is no grouped-query averaging (every
head here has its own keys). Attention over what is kept needs no positions: the keys carry RoPE already,
and the attention layer refuses a compressed cache for positions that add a logit bias. So a cache's kept
positions (`kept_positions()`) are for inspection only; they are not in `stored()` nor in `nbytes()`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.base import FullCache

POOLINGS = {"avg": F.avg_pool1d, "max": F.max_pool1d}


def _check_window(window: int) -> None:
    if window < 1:
        raise BadInput(f"an eviction cache's window must be at least 1 token, not {window}")


def _check_snapkv(budget: int, window: int, kernel: int, pooling: str) -> None:
    _check_window(window)
    if budget < window:
        raise BadInput(f"a SnapKV budget ({budget}) must be at least its window ({window}): "
                       "the window's tokens are always kept")
    if kernel < 1 or kernel % 2 == 0:
        raise BadInput(f"a SnapKV pooling kernel must be odd and at least 1, not {kernel}: "
                       "an even kernel with padding kernel // 2 changes the number of scores")
    if pooling not in POOLINGS:
        raise BadInput(f"unknown SnapKV pooling {pooling!r}; use one of {', '.join(POOLINGS)}")


class WindowCache(FullCache):
    """The keys and values of the most recent `window` tokens, in 16 bits.

    The prompt is attended exactly (the cache contract's prefill); from then on a new token sees the
    `window` tokens before it and itself."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, window: int):
        _check_window(window)
        super().__init__(batch, n_heads, head_dim)
        self.window = window

    def store(self, k, v):
        super().store(k, v)
        if self.k.shape[2] > self.window:
            # A copy, not a view: a view would keep the dropped tokens' memory alive.
            self.k = self.k[:, :, -self.window :].clone()
            self.v = self.v[:, :, -self.window :].clone()


def snapkv_scores(q: torch.Tensor, k: torch.Tensor, window: int, kernel: int, pooling: str) -> torch.Tensor:
    """(B, H, Lp - window): SnapKV's vote of the prompt's last `window` queries for each earlier key.

    q, k: the prompt's queries and keys (B, H, Lp, hd), Lp > window."""
    Lp, hd = k.shape[2], k.shape[3]
    logits = (q[:, :, -window:].float() @ k.float().transpose(-1, -2)) / math.sqrt(hd)  # (B, H, w, Lp)
    # Query j of the window stands at Lp - window + j and sees the keys up to there.
    seen_at = torch.arange(Lp - window, Lp, device=k.device)[:, None]
    future = torch.arange(Lp, device=k.device)[None, :] > seen_at
    attention = torch.softmax(logits.masked_fill(future, float("-inf")), -1)
    votes = attention[..., : Lp - window].sum(-2)  # (B, H, Lp - window): heads act as pooling channels
    return POOLINGS[pooling](votes, kernel, stride=1, padding=kernel // 2)


def snapkv_positions(q: torch.Tensor, k: torch.Tensor, budget: int, window: int, kernel: int,
                     pooling: str) -> torch.Tensor:
    """(B, H, budget) prompt positions SnapKV keeps, in increasing order: each head's top
    (budget - window) earlier keys by `snapkv_scores`, then the last `window` tokens."""
    B, H, Lp, _ = k.shape
    scores = snapkv_scores(q, k, window, kernel, pooling)
    picked = scores.topk(budget - window, dim=-1).indices.sort(-1).values
    recent = torch.arange(Lp - window, Lp, device=k.device).expand(B, H, window)
    return torch.cat([picked, recent], -1)


class SnapKVCache(FullCache):
    """SnapKV (see the module docstring): at prefill each head keeps `budget` of the prompt's tokens,
    chosen by the prompt's last `window` queries; every later token is kept.

    What is kept is stored as FullCache stores it, (B, H, T, hd) in 16 bits, T the same for every head
    (budget or the whole shorter prompt, plus the tokens after the prompt), though heads keep different
    positions."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, budget: int, window: int = 32, kernel: int = 7,
                 pooling: str = "avg"):
        _check_snapkv(budget, window, kernel, pooling)
        super().__init__(batch, n_heads, head_dim)
        self.budget, self.window, self.kernel, self.pooling = budget, window, kernel, pooling
        self.prompt_length = 0
        self.prompt_kept = torch.zeros(batch, n_heads, 0, dtype=torch.long)  # for inspection, not stored()

    def prompt_budget(self, prompt_length: int) -> int:
        """How many prompt tokens a head keeps (at most the whole prompt)."""
        return self.budget

    def prefill(self, q, k, v):
        B, H, Lp, hd = k.shape
        self.prompt_length = Lp
        budget = self.prompt_budget(Lp)
        if Lp <= budget:
            self.prompt_kept = torch.arange(Lp, device=k.device).expand(B, H, Lp)
            self.store(k, v)
            return
        self.prompt_kept = snapkv_positions(q, k, budget, self.window, self.kernel, self.pooling)
        rows = self.prompt_kept[..., None].expand(B, H, budget, hd)
        self.store(k.gather(2, rows), v.gather(2, rows))

    def kept_positions(self) -> torch.Tensor:
        """(B, H, T): the position in the sequence of each kept token, in the order of dense()."""
        B, H, n_prompt = self.prompt_kept.shape
        after = torch.arange(self.prompt_length, self.prompt_length + self.k.shape[2] - n_prompt,
                             device=self.prompt_kept.device)
        return torch.cat([self.prompt_kept, after.expand(B, H, -1)], -1)


def pyramid_budgets(mean_budget: int, n_layers: int, beta: float = 20, window: int = 0) -> list[int]:
    """PyramidKV's per-layer budgets, falling linearly with depth and averaging `mean_budget`.

    The schedule of the authors' code (Zefan-Cai/PyramidKV, pyramidkv/pyramidkv_utils.py,
    `PyramidKVCluster.update_kv`) spreads what a layer keeps beyond its window, m = mean_budget - window:
    the top layer gets m / beta, layer 0 gets 2m - m / beta, and the layers between fall in equal steps,
    so the mean is m. As in NVIDIA kvpress's `PyramidKVPress`, the steps are not floored and each budget
    is rounded, which keeps the mean exact for whole m; the window is added back to every layer, so none
    keeps less than its window. A larger beta makes the pyramid steeper."""
    if n_layers < 1:
        raise BadInput(f"a PyramidKV schedule needs at least one layer, not {n_layers}")
    if beta < 1:
        raise BadInput(f"PyramidKV's beta must be at least 1 (1 gives every layer the same budget), not {beta}")
    if mean_budget < window:
        raise BadInput(f"a PyramidKV mean budget ({mean_budget}) must be at least the window ({window})")
    spread = mean_budget - window
    if n_layers == 1:
        return [mean_budget]
    least = spread / beta
    most = 2 * spread - least
    step = (most - least) / (n_layers - 1)
    return [window + round(most - i * step) for i in range(n_layers)]


class PyramidKVCache(SnapKVCache):
    """SnapKV whose budget depends on the layer: `pyramid_budgets(budget, n_layers, beta, window)[layer]`,
    so lower layers keep more of the prompt and the layers together keep `budget` per layer on average.

    A prompt too short for the pyramid (shorter than layer 0's budget, so that layer could not spend it)
    gets the uniform SnapKV budget in every layer, as kvpress's `PyramidKVPress` falls back to SnapKV (the
    authors' code does so below 2 * (budget - window) tokens)."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, budget: int, layer: int, n_layers: int,
                 window: int = 32, kernel: int = 7, pooling: str = "avg", beta: float = 20):
        super().__init__(batch, n_heads, head_dim, budget, window, kernel, pooling)
        if not 0 <= layer < n_layers:
            raise BadInput(f"layer {layer} is not one of the model's {n_layers} layers")
        self.layer, self.n_layers, self.beta = layer, n_layers, beta
        self.budgets = pyramid_budgets(budget, n_layers, beta, window)
        self.layer_budget = self.budgets[layer]

    def prompt_budget(self, prompt_length: int) -> int:
        return self.budget if prompt_length < self.budgets[0] else self.layer_budget
