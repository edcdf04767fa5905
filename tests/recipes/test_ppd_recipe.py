"""The ppd recipe's batches of prompts and answers, and its count of the tokens a decoder reads."""

from types import SimpleNamespace

import torch

from seqlab.formats.tokenizer import EOS
from seqlab.recipes.ppd import as_batch, ratio, reads


def enc(prompt, answer, base):
    return SimpleNamespace(prompt=prompt, prompt_pos=list(range(len(prompt))), answer=answer, answer_pos_base=base)


def test_as_batch_pads_and_masks_the_positions_where_ppd_launches_branches():
    tokens, pos, mask = as_batch([enc([5, 6, 7], [8, 9, 4, EOS], 3), enc([5, 6], [9, EOS], 2)])
    assert tokens.tolist() == [[5, 6, 7, 8, 9, 4, EOS], [5, 6, 9, EOS, 0, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 0, 0, 0]]
    # PPD reads 8, 9 and 4; after 8 and 9 it launches branches (for 9 and 4); 4's successor is EOS: no launch.
    # Row 1 reads 9, whose successor is EOS: nothing is launched.
    assert mask.tolist() == [[False, False, False, True, True, False, False], [False] * 7]


def test_reads_counts_every_written_token_but_the_last():
    assert reads(torch.tensor([[4, 5, EOS, EOS, EOS]])) == 2
    assert reads(torch.tensor([[4, 5, 6]])) == 2
    assert reads(torch.tensor([[EOS, EOS]])) == 0
    assert ratio(3, 4) == 0.75 and ratio(0, 0) == 1.0
