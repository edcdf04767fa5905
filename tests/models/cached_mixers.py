"""Decoders of every mixer with a decoding cache (and canon layers), for the tests of decoding methods that must be
exact on all of them: beam search, speculative and pipelined decoding."""

CACHED_MIXERS = [
    {"mixers": "attention", "canon": 2},
    {"mixers": "mamba", "mlp": "none", "norm": "rmsnorm", "position": "none"},
    {"mixers": "linear", "linear": {"feature_map": "elu"}},
    {"mixers": "sliding_window", "sliding_window": {"window": 3}},
    {"mixers": "mamba,attention", "canon": 3},
]
