"""Formats: how a task's example becomes token ids, position ids and a loss mask, and the tokenizer."""

from seqlab.formats.format import HINTS, Encoded, Format, FormatConfig
from seqlab.formats.tokenizer import BOS, EOS, PAD, CharTokenizer

__all__ = ["BOS", "EOS", "HINTS", "PAD", "CharTokenizer", "Encoded", "Format", "FormatConfig"]
