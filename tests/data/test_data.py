"""Batches: deterministic by step, prefetching changes nothing, loss mask on the answer only."""

import threading

import torch

from seqlab.data.text import IGNORE, TrainStream
from seqlab.formats.format import Format, FormatConfig
from seqlab.tasks import get
from seqlab.formats.tokenizer import EOS, PAD


def _stream(seed=0, position_ids="coupled", max_offset=5):
    task = get("addition", max_len=6)
    return TrainStream(task, Format(FormatConfig(max_offset=max_offset), task, position_ids), seed, batch_size=8)


def test_prefetched_batches_equal_direct_batches():
    s = _stream()
    for step, b in zip(range(3, 9), s.prefetch(3, 9)):
        d = s.batch(step)
        assert torch.equal(b.tokens, d.tokens) and torch.equal(b.targets, d.targets) and torch.equal(b.pos_ids, d.pos_ids)


def test_prefetch_stops_cleanly_when_abandoned():
    before = set(threading.enumerate())
    gen = _stream().prefetch(0, 1000)
    next(gen)
    producers = [t for t in threading.enumerate() if t not in before]
    # close() from a watched thread: a producer stuck on the full queue would hang it, and the test with it
    closer = threading.Thread(target=gen.close, daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "closing an abandoned prefetch did not return within 30 s"
    assert len(producers) == 1 and not producers[0].is_alive()


def test_batches_are_pure_functions_of_seed_and_step():
    a, b = _stream(seed=1), _stream(seed=1)
    assert torch.equal(a.batch(5).tokens, b.batch(5).tokens)
    assert torch.equal(a.batch(5).pos_ids, b.batch(5).pos_ids)
    assert not torch.equal(a.batch(5).tokens, _stream(seed=2).batch(5).tokens)


def test_targets_are_the_answer_then_eos():
    s = _stream(position_ids="standard", max_offset=0)
    b = s.batch(0)
    for r in range(b.tokens.shape[0]):
        ex = s.task.example(0, "train", r)
        answer = s.fmt.tokenizer.decode([t for t in b.targets[r].tolist() if t != IGNORE])
        assert answer == ex.answer[::-1]  # reversed output, read back from the targets
        kept = [t for t in b.targets[r].tolist() if t != IGNORE]
        assert kept[-1] == EOS and kept.count(EOS) == 1
        n_in = int((b.tokens[r] != PAD).sum())
        assert (b.targets[r, n_in:] == IGNORE).all()
