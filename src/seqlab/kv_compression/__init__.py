"""KV-cache compression on trained runs: collect keys and values, learn dictionaries, score through a cache.

The caches themselves are in seqlab.models.kvcache; this layer runs them on a trained model's inputs.
"""

from seqlab.kv_compression.collect import collect_kv
from seqlab.kv_compression.methods import CacheSpec, make_factory
from seqlab.kv_compression.scoring import score_with_cache

__all__ = ["CacheSpec", "collect_kv", "make_factory", "score_with_cache"]
