"""The cache contract: one attention layer's keys and values, stored in whatever form a method keeps.

A cache is handed the new tokens' queries, keys and values (B, H, L, hd) and returns their attention
output; what it keeps of the keys and values is its own business. Every cache here follows one pattern:

- the first call (prefill, `length == 0`) attends exactly, causally, over the prompt, and only then
  stores the prompt in the cache's form (SnapKV picks tokens with the prompt's last queries here);
- a later call attends over what is stored (`past_logits`, `past_mix`) plus the new tokens themselves,
  which it then stores (`store`).

A cache whose heads share attention probabilities (CHAI) overrides `attend` itself; its prefill is exact
only where the method says so.

`nbytes()` is what the cache holds for its requests, counted from the tensors it keeps (`stored()`);
what every request shares (a dictionary) is `shared_nbytes()`, counted once per model. The exact parts
are kept in 16 bits, as the papers' full cache is: `FullCache` is the baseline the ratios are taken
against, and it really stores 16-bit keys and values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EXACT_DTYPE = torch.float16  # the papers' full cache: fp16 keys and values


def exact_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ordinary causal attention of L queries over their own L keys (the prefill)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)


def nbytes_of(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Cache:
    """One layer's cache. Subclasses define `past_logits`, `past_mix` and `store` (and `prefill` where
    the prompt is stored differently from later tokens)."""

    def __init__(self, batch: int, n_heads: int, head_dim: int):
        self.batch, self.n_heads, self.head_dim = batch, n_heads, head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        self.length = 0  # tokens seen (prompt and generated), whatever is kept of them

    # -- what a subclass defines ---------------------------------------------------------------------
    def past_logits(self, q: torch.Tensor) -> torch.Tensor:
        """Scaled logits (B, H, Lq, T) of the queries against the T stored keys."""
        raise NotImplementedError

    def past_mix(self, p: torch.Tensor) -> torch.Tensor:
        """(B, H, Lq, hd): the stored values weighted by probabilities p (B, H, Lq, T)."""
        raise NotImplementedError

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep new tokens' keys and values (B, H, L, hd) in the cache's form."""
        raise NotImplementedError

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the prompt; the prompt's queries are there for a cache that chooses with them."""
        self.store(k, v)

    def stored(self) -> dict[str, torch.Tensor]:
        """Every tensor the cache keeps for its requests, by name (their sizes add up to nbytes())."""
        raise NotImplementedError

    def shared(self) -> dict[str, torch.Tensor]:
        """Tensors shared by every request (a dictionary), counted once per model."""
        return {}

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, H, T, hd) attention sees, rebuilt plainly: the reference path
        (ordinary attention over them equals `attend`'s, which the parity tests check)."""
        raise NotImplementedError

    # -- the contract --------------------------------------------------------------------------------
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.length == 0:
            y = exact_causal(q, k, v)
            self.prefill(q, k, v)
        else:
            y = self.attend_past(q, k, v)
            self.store(k, v)
        self.length += q.shape[2]
        return y

    def attend_past(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax over the stored keys and the new ones together, the new ones causally."""
        L = q.shape[2]
        past = self.past_logits(q)  # (B, H, L, T)
        new = (q @ k.transpose(-1, -2)) * self.scale  # (B, H, L, L)
        if L > 1:
            future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
            new = new.masked_fill(future, float("-inf"))
        p = torch.softmax(torch.cat([past.float(), new.float()], -1), -1).to(q.dtype)
        T = past.shape[-1]
        return self.past_mix(p[..., :T]) + p[..., T:] @ v

    def nbytes(self) -> int:
        return nbytes_of(self.stored().values())

    def shared_nbytes(self) -> int:
        return nbytes_of(self.shared().values())


class FullCache(Cache):
    """Every key and value, in 16 bits: the baseline."""

    def __init__(self, batch: int, n_heads: int, head_dim: int):
        super().__init__(batch, n_heads, head_dim)
        self.k = torch.zeros(batch, n_heads, 0, head_dim, dtype=EXACT_DTYPE)
        self.v = torch.zeros_like(self.k)

    def store(self, k, v):
        self.k = torch.cat([self.k.to(k.device), k.to(EXACT_DTYPE)], 2)
        self.v = torch.cat([self.v.to(v.device), v.to(EXACT_DTYPE)], 2)

    def past_logits(self, q):
        return (q @ self.k.to(q.dtype).transpose(-1, -2)) * self.scale

    def past_mix(self, p):
        return p @ self.v.to(p.dtype)

    def stored(self):
        return {"k": self.k, "v": self.v}

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v
