"""Serving and decoding on trained decoders: speculative decoding (more to come: batching, pipelined decoding)."""
