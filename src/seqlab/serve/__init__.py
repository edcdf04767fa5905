"""Serving and decoding on trained decoders: the batched engine (slots, schedulers, the serving loop), its simulator
and length predictors, speculative and self-speculative decoding, early exits and pipelined decoding."""
