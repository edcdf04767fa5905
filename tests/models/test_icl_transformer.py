"""The in-context learners: Garg's token layout, causality (a prediction never reads its own label or
later points), the looped model's loops, the prompt stream's curriculum, and error scoring."""

import numpy as np
import pytest
import torch

from seqlab.eval.icl_curves import at_k, bootstrap_interval, error_curve
from seqlab.data.prompts import Curriculum, PromptStream, Ramp, garg_curriculum
from seqlab.eval.icl_scoring import score
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model, interleave
from seqlab.tasks.function_classes import get_function


def test_interleave_is_gargs_layout():
    xs, ys = torch.randn(2, 3, 4), torch.randn(2, 3)
    z = interleave(xs, ys)
    assert z.shape == (2, 6, 4)
    for i in range(3):
        assert torch.equal(z[:, 2 * i], xs[:, i])
        assert torch.equal(z[:, 2 * i + 1, 0], ys[:, i])
        assert torch.equal(z[:, 2 * i + 1, 1:], torch.zeros(2, 3))


@pytest.mark.parametrize("arch,position,canon,types", [
    ("transformer", "learned", 0, False), ("transformer", "rope", 0, False), ("transformer", "none", 0, False),
    ("transformer", "learned", 3, True), ("looped", "learned", 0, False), ("looped", "rope", 2, False)])
def test_prediction_i_reads_only_earlier_pairs_and_x_i(arch, position, canon, types):
    torch.manual_seed(0)
    model = build_icl_model(ICLModelConfig(arch=arch, n_dims=3, n_layers=2, d_model=16, n_heads=2, position=position,
                                           max_points=8, loops=3, loop_window=2, canon=canon, token_types=types)).eval()
    xs, ys = torch.randn(2, 6, 3), torch.randn(2, 6)
    base = model(xs, ys)
    for i in range(6):
        later_x, own_and_later_y = xs.clone(), ys.clone()
        later_x[:, i + 1:] += 5.0
        own_and_later_y[:, i:] -= 7.0
        moved = model(later_x, own_and_later_y)
        assert torch.allclose(moved[:, i], base[:, i], atol=1e-5), i
        if i > 0:  # and it does read the earlier labels
            changed = ys.clone()
            changed[:, i - 1] += 3.0
            assert not torch.allclose(model(xs, changed)[:, i], base[:, i])


def test_looped_model_loop_counts_and_window():
    torch.manual_seed(0)
    c = ICLModelConfig(arch="looped", n_dims=3, n_layers=1, d_model=16, n_heads=2, max_points=5, loops=4, loop_window=2)
    model = build_icl_model(c).eval()
    xs, ys = torch.randn(3, 5, 3), torch.randn(3, 5)
    outs = model.loop_outputs(xs, ys, 6)
    assert len(outs) == 6
    for t in (1, 4, 6):
        assert torch.allclose(model(xs, ys, t), outs[t - 1])
    want = torch.stack([((o - ys) ** 2).mean() for o in outs[2:4]]).mean()  # the last 2 of 4 loops
    assert torch.allclose(model.loss(xs, ys), want, atol=1e-6)
    assert not torch.allclose(outs[0], outs[1])  # loops change the output: the block is really applied again


def test_ramp_and_curriculum():
    r = Ramp(start=5, end=20, inc=1, interval=2000)
    assert [r.at(s) for s in (0, 1999, 2000, 30000)] == [5, 5, 6, 20]
    c = garg_curriculum(20, 41)
    assert c.at(0) == {"active_dims": 5, "n_points": 11, "loops": None}
    assert c.at(10**6) == {"active_dims": 20, "n_points": 41, "loops": None}
    with pytest.raises(ValueError):
        Ramp(start=3, end=2)


def test_prompt_stream_follows_the_curriculum_and_is_pure():
    fc = get_function("linear-regression", n_dims=6, n_points=15)
    cur = Curriculum(dims=Ramp(start=2, end=6, interval=10), points=Ramp(start=5, end=15, inc=2, interval=10),
                     loops=Ramp(start=1, end=4, inc=1, interval=10))
    stream = PromptStream(fc, seed=3, batch_size=4, curriculum=cur)
    b0, b25 = stream.batch(0), stream.batch(25)
    assert b0.xs.shape == (4, 5, 6) and b25.xs.shape == (4, 9, 6)
    assert torch.all(b0.xs[..., 2:] == 0) and torch.any(b0.xs[..., :2] != 0)
    assert torch.all(b25.xs[..., 4:] == 0) and torch.any(b25.xs[..., 3] != 0)
    assert (b0.loops, b25.loops) == (1, 3)
    again = PromptStream(fc, seed=3, batch_size=4, curriculum=cur).batch(25)
    assert torch.equal(again.xs, b25.xs) and torch.equal(again.ys, b25.ys)
    assert not torch.equal(stream.batch(26).xs[:, :5], b25.xs[:, :5])


def test_score_regression_classification_and_last_point_models():
    reg = get_function("linear-regression", n_dims=4)
    ys = np.array([[1.0, -2.0]])
    assert np.allclose(score(reg, np.array([[0.0, 0.0]]), ys), [[0.25, 1.0]])  # squared error / d
    cls = get_function("linear-classification", n_dims=4)
    assert np.array_equal(score(cls, np.array([[0.3, 0.5]]), np.array([[1.0, -1.0]])), [[0.0, 1.0]])
    last_only = score(reg, np.array([2.0]), np.array([[5.0, 0.0]]))
    assert np.isnan(last_only[0, 0]) and last_only[0, 1] == 1.0


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    small, large = rng.exponential(size=(50, 3)), rng.exponential(size=(5000, 3))
    for errors in (small, large):
        lo, hi = bootstrap_interval(errors)
        assert np.all(lo <= errors.mean(0)) and np.all(errors.mean(0) <= hi)
    assert np.all((bootstrap_interval(large)[1] - bootstrap_interval(large)[0])
                  < (bootstrap_interval(small)[1] - bootstrap_interval(small)[0]))
    with_gaps = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, 5.0]])
    curve = error_curve(with_gaps)
    assert curve["k"] == [0, 2] and at_k(curve, 2) == 4.0 and at_k(curve, 1) is None


def test_lsa_scratch_coordinates_widen_tokens_and_never_read_the_hidden_label():
    from seqlab.models.lsa import LinearTransformer, LSAConfig

    torch.manual_seed(0)
    model = LinearTransformer(LSAConfig(n_dims=3, n_layers=2, scratch=4, init_std=0.3))
    assert model.n_params() == 2 * 2 * (4 + 3 + 1) ** 2  # W_KQ and W_PV per layer, on 8-wide tokens
    xs, ys = torch.randn(2, 6, 3), torch.randn(2, 6)
    hidden = ys.clone()
    hidden[:, -1] += 9.0
    assert torch.equal(model(xs, ys), model(xs, hidden))
    earlier = ys.clone()
    earlier[:, 0] += 9.0
    assert not torch.allclose(model(xs, ys), model(xs, earlier))
