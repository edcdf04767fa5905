"""A character tokenizer with PAD, BOS and EOS."""

from __future__ import annotations

from seqlab.core.errors import BadInput

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class CharTokenizer:
    """One token per character; ids 0-2 are PAD, BOS, EOS, then the characters in sorted order."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.itos = list(SPECIALS) + list(self.chars)
        self.stoi = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise BadInput(f"character {e.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids: list[int], stop_at_eos: bool = True) -> str:
        """Characters for ids, skipping PAD and BOS, stopping at the first EOS."""
        out = []
        for i in ids:
            if i == EOS and stop_at_eos:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return "".join(out)
