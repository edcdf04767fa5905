"""The TVP-loss: the zero-shot line is cut out right, the vector is injected where it should be, and the
loss reaches the layers that form the vector."""

import torch
import torch.nn.functional as F

from seqlab.analysis.task_vectors import injecting, states_at
from seqlab.models import ModelConfig, build
from seqlab.train.tvp import IGNORE, TVPConfig, TVPObjective, last_query

ARROW, SEP, EOS, PAD = 7, 8, 9, 0


def prompt(lines: list[tuple[list[int], list[int]]], length: int):
    """Tokens and targets of "x → y , x → y , ... x → y <eos>", right-padded to `length`."""
    tokens, targets = [], []
    for j, (x, y) in enumerate(lines):
        end = EOS if j == len(lines) - 1 else SEP
        line = [*x, ARROW, *y, end]
        t = [IGNORE] * len(line)
        for k in range(len(x), len(line) - 1):  # from the arrow on, predict the next token
            t[k] = line[k + 1]
        tokens += line
        targets += t
    return tokens + [PAD] * (length - len(tokens)), targets + [IGNORE] * (length - len(targets))


def batch():
    rows = [prompt([([1, 2], [3, 4]), ([2, 2], [4, 4])], 16),
            prompt([([5], [6]), ([1], [2]), ([3], [4])], 16),
            prompt([([1, 1, 1], [2])], 16)]  # no demonstrations
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def test_last_query_cuts_the_last_line_left_aligned():
    tokens, targets = batch()
    line, line_targets, arrow, line_arrow = last_query(tokens, targets, ARROW, SEP, PAD)
    assert line[0, :6].tolist() == [2, 2, ARROW, 4, 4, EOS]
    assert line[1, :4].tolist() == [3, ARROW, 4, EOS]
    assert line[2, :6].tolist() == [1, 1, 1, ARROW, 2, EOS]
    assert line_arrow.tolist() == [2, 1, 3]
    assert [tokens[b, arrow[b]].item() for b in range(3)] == [ARROW] * 3
    for b in range(3):  # the line's targets are the prompt's, moved with it: the next token from the arrow on
        end = int((line[b] == EOS).nonzero()[0])
        assert line_targets[b, line_arrow[b]:end].tolist() == line[b, line_arrow[b] + 1:end + 1].tolist()
        assert (line_targets[b, :line_arrow[b]] == IGNORE).all() and (line_targets[b, end:] == IGNORE).all()
    assert (line[1, 4:] == PAD).all() and (line_targets[1, 3:] == IGNORE).all()


def model(n_layers=2):
    torch.manual_seed(0)
    return build(ModelConfig(n_layers=n_layers, d_model=16, n_heads=2, position="rope"), 10)


def test_weight_zero_is_the_plain_loss():
    m = model()
    tokens, targets = batch()
    objective = TVPObjective(m, TVPConfig(layer=1, weight=0.0), ARROW, SEP, PAD)
    assert torch.equal(objective(tokens, targets), m.loss(tokens, targets))


def test_zero_shot_term_is_the_injected_query_loss():
    m = model()
    tokens, targets = batch()
    objective = TVPObjective(m, TVPConfig(layer=0, weight=1.0), ARROW, SEP, PAD)
    total = objective(tokens, targets)
    line, line_targets, arrow, line_arrow = last_query(tokens, targets, ARROW, SEP, PAD)
    vectors = states_at(m, tokens, arrow, [0])[0]
    with injecting(m, 0, vectors, line_arrow):
        logits, wanted = m.scored_logits(line, line_targets)
    expected = m.loss(tokens, targets) + F.cross_entropy(logits, wanted)
    assert torch.allclose(total, expected, atol=1e-6)
    # and the injection matters: without it the zero-shot loss differs
    logits_plain, _ = m.scored_logits(line, line_targets)
    assert not torch.allclose(F.cross_entropy(logits_plain, wanted), F.cross_entropy(logits, wanted))


def test_the_zero_shot_loss_trains_the_layers_that_form_the_vector():
    m = model(n_layers=3)
    tokens, targets = batch()
    objective = TVPObjective(m, TVPConfig(layer=1, weight=1.0), ARROW, SEP, PAD)
    (objective(tokens, targets) - m.loss(tokens, targets)).backward()  # the zero-shot term alone
    # block 0 shapes the vector (and the query's own states); block 2 reads it
    for i in (0, 2):
        grads = [p.grad for p in m.blocks[i].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
    assert not any(p.fns for p in m.modules() if hasattr(p, "fns"))  # hooks taken off again


def test_a_tvp_run_trains_and_resumes_exactly(tmp_path):
    import json

    from seqlab.runs import make_config, train

    base = {"task": {"name": "icl-map", "maps": "add1,reverse", "n_symbols": 5, "word_len": 2, "n_demos": 3},
            "model": {"n_layers": 2, "d_model": 16, "n_heads": 2},
            "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "eval_n": 8, "log_every": 1, "checkpoint_every": 3},
            "tvp": {"layer": 1, "weight": 0.5}}
    whole = train(tmp_path / "whole", make_config(base), quiet=True)
    assert whole["step"] == 6
    part = make_config({**base, "train": {**base["train"], "steps": 3}})
    train(tmp_path / "split", part, quiet=True)
    train(tmp_path / "split", make_config(base), quiet=True)

    def losses(d):
        return [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines() if "loss" in x]

    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["tvp"] == {"layer": 1, "weight": 0.5}


def test_tvp_needs_the_mapping_task_and_a_layer_inside_the_model():
    import pytest

    from seqlab.runs import make_config

    with pytest.raises(Exception, match="icl-map"):
        make_config({"task": {"name": "mqar"}, "tvp": {"layer": 0}})
    with pytest.raises(Exception, match="past the model"):
        make_config({"task": {"name": "icl-map"}, "model": {"n_layers": 2}, "tvp": {"layer": 2}})
