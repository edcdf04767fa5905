"""Scoring through a cache: with the model's own cache it is the ordinary teacher-forced score; the byte
count is the caches'; collected keys and values are the cache's vectors."""

import numpy as np
import pytest
import torch

from seqlab.eval.token_scoring import score_tokens
from seqlab.kv_compression import CacheSpec, collect_kv, make_factory, score_with_cache
from seqlab.models import ModelConfig, build
from seqlab.tasks.token_base import get_token_task


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    task = get_token_task("mqar", vocab_size=64, input_seq_len=32, num_kv_pairs=4)
    model = build(ModelConfig(n_layers=2, d_model=64, n_heads=2, position="rope"), task.vocab_size).eval()
    with torch.no_grad():  # sharper attention than at initialisation, so the caches differ
        for b in model.blocks:
            b.mixer.qkv.weight.mul_(4)
    tokens, targets = task.batch(0, "test", 0, 24)
    return task, model, tokens, targets


def test_the_models_own_cache_scores_as_a_forward_pass_does(setting):
    _, model, tokens, targets = setting
    plain = score_tokens(model, tokens, targets)
    cached = score_with_cache(model, tokens, targets, None)
    assert cached["accuracy"] == plain["accuracy"] and cached["exact_match"] == plain["exact_match"]
    assert cached["n_scored"] == plain["n_scored"] and cached["kv_bytes"] == 0


def test_the_full_cache_counts_16_bit_keys_and_values(setting):
    _, model, tokens, targets = setting
    full = score_with_cache(model, tokens, targets, make_factory(model, CacheSpec(method="full")))
    L = tokens.shape[1]
    assert full["kv_bytes"] == 2 * 2 * 2 * L * 32 * 2  # layers x (K, V) x heads x tokens x head dim x 2 bytes
    assert abs(full["accuracy"] - score_tokens(model, tokens, targets)["accuracy"]) <= 0.05
    window = score_with_cache(model, tokens, targets, make_factory(model, CacheSpec(method="window", window=4)))
    assert window["kv_bytes"] == 2 * 2 * 2 * 4 * 32 * 2


def test_a_prefill_longer_than_the_context_is_refused(setting):
    _, model, tokens, targets = setting
    first = int(np.flatnonzero((targets != -100).any(0))[0])
    with pytest.raises(ValueError, match="prefill"):
        score_with_cache(model, tokens, targets, None, prefill=first + 2)


def test_collected_vectors_are_the_non_pad_keys_and_values(setting):
    task, model, tokens, _ = setting
    kv = collect_kv(model, tokens[:5], pad_id=task.pad_id)
    n_tokens = int((tokens[:5] != task.pad_id).sum())
    assert len(kv) == 2 and all(k.shape == v.shape == (n_tokens * 2, 32) for k, v in kv)
    assert collect_kv(model, tokens[:5], pad_id=task.pad_id, max_vectors=10)[0][0].shape == (10, 32)


def test_decoding_can_stop_early_and_only_the_positions_before_count(setting):
    _, model, tokens, targets = setting
    first = int(np.flatnonzero((targets != -100).any(0))[0])
    short = score_with_cache(model, tokens, targets, make_factory(model, CacheSpec(method="full")), decode=6)
    assert short["n_scored"] == int((targets[:, :first + 6] != -100).sum()) < int((targets != -100).sum())
    assert short["kv_bytes"] == 2 * 2 * 2 * (first + 6) * 32 * 2
