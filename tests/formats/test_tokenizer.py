"""CharTokenizer: specials PAD=0 BOS=1 EOS=2, round trips, where decode stops, unknown characters."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.core.errors import BadInput
from seqlab.formats.tokenizer import BOS, EOS, PAD, CharTokenizer

VOCAB = "0123456789+*=abcxyzé€😀"


def test_specials_come_first_then_the_characters_in_sorted_order():
    assert (PAD, BOS, EOS) == (0, 1, 2)
    tok = CharTokenizer("cabba=")  # duplicates collapse, order does not matter
    assert tok.vocab_size == 3 + 4
    assert tok.encode("=abc") == [3, 4, 5, 6]
    assert sorted(tok.encode("cab=")) == [3, 4, 5, 6]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet=VOCAB, max_size=40))
def test_decode_inverts_encode(s):
    tok = CharTokenizer(VOCAB)
    ids = tok.encode(s)
    assert len(ids) == len(s) and all(3 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == s
    # PAD and BOS anywhere are skipped; everything after the first EOS is dropped.
    assert tok.decode([BOS] + ids + [EOS] + tok.encode("abc") + [PAD]) == s
    assert tok.decode([PAD, BOS] + [x for i in ids for x in (i, PAD)]) == s


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(alphabet=VOCAB, max_size=10), st.text(alphabet=VOCAB, max_size=10))
def test_decode_stops_at_the_first_eos_unless_told_not_to(head, tail):
    tok = CharTokenizer(VOCAB)
    ids = tok.encode(head) + [EOS] + tok.encode(tail) + [EOS]
    assert tok.decode(ids) == head
    assert tok.decode(ids, stop_at_eos=False) == head + tail


@pytest.mark.parametrize("text", ["d", "ab d", "12\n", "x"])
def test_unknown_character_is_bad_input(text):
    with pytest.raises(BadInput, match="vocabulary"):
        CharTokenizer("0123456789abc").encode(text)
