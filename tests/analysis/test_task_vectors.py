"""Task vector extraction, injection and answer scoring, checked against direct computations."""

import numpy as np
import torch
import torch.nn.functional as F

from seqlab.analysis.hooks import run_with_cache
from seqlab.analysis.mapping_probes import answer_probs, map_prompts, query_arrows, with_answer
from seqlab.analysis.task_vectors import injecting, states_at, task_vectors, teacher_forced
from seqlab.models import ModelConfig, build
from seqlab.recipes.superposition import counts_for
from seqlab.tasks.icl_maps import LETTERS
from seqlab.tasks.token_base import IGNORE

PARAMS = {"maps": "add1,copy0,reverse", "n_symbols": 6, "word_len": 3, "n_demos": 3}


def model(vocab=10, n_layers=3):
    torch.manual_seed(0)
    return build(ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, position="rope"), vocab).eval()


def test_states_and_task_vectors_are_the_cached_residuals_at_the_arrow():
    task, tokens, _, metas = map_prompts(PARAMS, 0, "test", 12, task="add1")
    m = model(task.vocab_size)
    arrows = query_arrows(metas)
    _, cache = run_with_cache(m, tokens)
    states = states_at(m, tokens, arrows, [0, 2])
    for j, layer in enumerate([0, 2]):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        for b in range(len(tokens)):
            assert torch.equal(states[j, b], resid[b, arrows[b]])
    tv = task_vectors(m, tokens, arrows, batch=5)  # batched mean equals the plain mean
    assert torch.allclose(tv, states_at(m, tokens, arrows, [0, 1, 2]).mean(1), atol=1e-6)


def test_injecting_a_prompts_own_state_changes_nothing_and_another_changes_only_later_positions():
    task, tokens, targets, metas = map_prompts(PARAMS, 1, "test", 6, task="reverse")
    m = model(task.vocab_size)
    arrows = query_arrows(metas)
    plain = m(tokens)
    own = states_at(m, tokens, arrows, [1])[0]
    with injecting(m, 1, own, arrows):
        assert torch.allclose(m(tokens), plain, atol=1e-6)
    with injecting(m, 1, torch.randn(32), arrows):
        changed = m(tokens)
    for b in range(len(tokens)):
        a = int(arrows[b])
        assert torch.allclose(changed[b, :a], plain[b, :a], atol=1e-6)
        assert not torch.allclose(changed[b, a:], plain[b, a:])


def test_teacher_forced_is_log_softmax_of_the_targets_and_argmax_agreement():
    task, tokens, targets, _ = map_prompts(PARAMS, 2, "test", 8, score="query")
    m = model(task.vocab_size)
    right, logprob = teacher_forced(m, tokens, targets)
    logits = m(tokens)
    for b in range(len(tokens)):
        pos = (targets[b] != IGNORE).nonzero().flatten()
        lp = F.log_softmax(logits[b, pos], -1)[torch.arange(len(pos)), targets[b, pos]].sum()
        assert torch.allclose(logprob[b], lp, atol=1e-5)
        assert bool(right[b]) == bool((logits[b, pos].argmax(-1) == targets[b, pos]).all())


def test_with_answer_writes_each_maps_answer_after_the_query_arrow():
    task, tokens, _, metas = map_prompts(PARAMS, 3, "test", 10, mix="add1:2,reverse:1")
    for name in ("add1", "copy0", "reverse"):
        seqs, tgts = with_answer(task, tokens, metas, name)
        for b, meta in enumerate(metas):
            a = meta["query_arrow"]
            assert seqs[b, : a + 1].tolist() == tokens[b, : a + 1].tolist()
            answer = [LETTERS.index(ch) + 1 for ch in meta["answers"][name]] + [task.comma]
            assert seqs[b, a + 1: a + 1 + len(answer)].tolist() == answer
            scored = (tgts[b] != IGNORE).nonzero().flatten().tolist()
            assert scored == list(range(a, a + len(answer)))
            assert tgts[b, scored].tolist() == answer


def test_answer_probabilities_of_distinct_answers_sum_to_at_most_one():
    task, tokens, _, metas = map_prompts(PARAMS, 4, "test", 10, mix="add1:1,copy0:1,reverse:1")
    m = model(task.vocab_size)
    probs = answer_probs(m, task, tokens, metas, ["add1", "copy0", "reverse"])
    total = sum(probs.values())
    assert np.all(total <= 1 + 1e-6) and np.all(total > 0)


def test_counts_follow_the_shares():
    assert counts_for((0.3, 0.7), 10) == [3, 7]
    assert sum(counts_for((1 / 3, 1 / 3, 1 / 3), 10)) == 10
    assert counts_for((0.2, 0.3, 0.5), 10) == [2, 3, 5]
