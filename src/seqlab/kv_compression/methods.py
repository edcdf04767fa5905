"""Cache methods as data: a spec names a method and its settings; `make_factory` turns it into the
`kv_cache(layer, batch, n_heads, head_dim)` the decoder takes, with what the method learned offline
(Lexico's dictionaries, PCA's bases, CHAI's static memberships), one per attention layer."""

from __future__ import annotations

from typing import Any, Callable, Literal

from pydantic import Field

from seqlab.core.configs import Config
from seqlab.models.kvcache.base import FullCache
from seqlab.models.kvcache.chai import ChaiCache
from seqlab.models.kvcache.eviction import PyramidKVCache, SnapKVCache, WindowCache
from seqlab.models.kvcache.kivi import KIVICache
from seqlab.models.kvcache.lexico import LexicoCache
from seqlab.models.kvcache.pca import PCACache
from seqlab.models.mixers.attention import CausalSelfAttention

METHODS = ("full", "lexico", "pca", "kivi", "snapkv", "pyramidkv", "window", "chai")


class CacheSpec(Config):
    method: Literal["full", "lexico", "pca", "kivi", "snapkv", "pyramidkv", "window", "chai"]
    label: str | None = None  # how tables and plots name it; default: method and its main settings
    sparsity: int = Field(8, ge=1)  # lexico
    buffer: int = Field(8, ge=0)  # lexico and pca: the newest tokens kept exact
    chunk: int = Field(1, ge=1)
    rel_tol: float | None = Field(None, ge=0, lt=1)
    packed_indices: bool = False
    dictionary: str = "universal"  # lexico: which learned dictionary (the recipe's names)
    rank: int = Field(8, ge=1)  # pca: the directions kept (the bases given must have this rank)
    bits: int = 2  # kivi
    group: int = Field(32, ge=1)
    residual: int = Field(32, ge=0)
    budget: int = Field(64, ge=1)  # snapkv, pyramidkv
    window: int = Field(8, ge=1)  # snapkv's observation window; the sliding window's length
    kernel: int = Field(7, ge=1)
    beta: float = Field(20, ge=1)
    clusters: int = Field(1, ge=1)  # chai
    n_first: int = Field(5, ge=1)
    mode: str = "per-request"

    def name(self) -> str:
        if self.label:
            return self.label
        return {"full": "full", "lexico": f"lexico s={self.sparsity}", "pca": f"pca r={self.rank}", "kivi": f"kivi-{self.bits}",
                "snapkv": f"snapkv {self.budget}", "pyramidkv": f"pyramidkv {self.budget}",
                "window": f"window {self.window}", "chai": f"chai k={self.clusters} {self.mode}"}[self.method]


def attention_layers(model) -> dict[int, int]:
    """Block index -> index among the attention layers."""
    blocks = [i for i, b in enumerate(model.blocks) if isinstance(b.mixer, CausalSelfAttention)]
    return {b: j for j, b in enumerate(blocks)}


def make_factory(model, spec: CacheSpec, dictionaries: dict[str, list] | None = None, bases: list | None = None,
                 memberships: list | None = None) -> Callable:
    """The decoder's cache factory for `spec`. `dictionaries[name][j]` is (key atoms, value atoms) of attention
    layer j; `bases[j]` PCA's ((mean, basis) of keys, of values); `memberships[j]` CHAI's static (H,) labels."""
    index = attention_layers(model)
    n = len(index)
    s = spec

    def build(layer: int, B: int, H: int, hd: int):
        j = index[layer]
        m = s.method
        if m == "full":
            return FullCache(B, H, hd)
        if m == "lexico":
            dk, dv = _need(dictionaries, s.dictionary, "dictionary")[j]
            return LexicoCache(B, H, hd, dk, dv, s.sparsity, s.buffer, s.chunk, s.rel_tol, s.packed_indices)
        if m == "pca":
            key, value = _need({"pca": bases}, "pca", "PCA basis")[j]
            return PCACache(B, H, hd, key, value, s.buffer)
        if m == "kivi":
            return KIVICache(B, H, hd, s.bits, s.group, s.residual)
        if m == "snapkv":
            return SnapKVCache(B, H, hd, s.budget, s.window, s.kernel)
        if m == "pyramidkv":
            return PyramidKVCache(B, H, hd, s.budget, j, n, s.window, s.kernel, beta=s.beta)
        if m == "window":
            return WindowCache(B, H, hd, s.window)
        membership = memberships[j] if memberships is not None else None
        return ChaiCache(B, H, hd, membership=membership, n_clusters=s.clusters, n_first=s.n_first, mode=s.mode)

    return build


def _need(table: dict[str, Any] | None, name: str, what: str):
    if not table or table.get(name) is None:
        raise ValueError(f"this cache needs a learned {what} ({name!r}); none was given")
    return table[name]
