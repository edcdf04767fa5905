"""The decoder: cached and uncached greedy decoding agree, shapes hold, the mixer contract holds."""

import pytest
import torch

from seqlab.models import POSITIONS, ModelConfig, build
from seqlab.models.mixers.attention import CausalSelfAttention, SeqContext
from seqlab.models.positions import alibi_slopes, relative_id_bias

FORMAT_ID_SCHEMES = ("abacus", "coupling", "coupling_relative")


def _model(position, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(position=position, n_layers=2, d_model=32, n_heads=4, **kw)
    model = build(cfg, vocab_size=24).eval()
    with torch.no_grad():  # parameters that start at zero or one value: make them matter
        for name, p in model.named_parameters():
            if name.endswith(("rel_bias", "length_scale")):
                p.uniform_(0.2, 2.0)
    return model


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("log_length_scale", [False, True])
def test_cached_and_uncached_greedy_decoding_agree(position, mlp, log_length_scale):
    model = _model(position, mlp=mlp, log_length_scale=log_length_scale)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, 24, (5, 9), generator=g)
    # Some schemes read format ids; any ids work for this check, including repeated ones.
    by_format = position in FORMAT_ID_SCHEMES
    pos = torch.randint(0, 30, (5, 9), generator=g) if by_format else torch.arange(9).expand(5, 9)
    base = torch.randint(1, 30, (5,), generator=g) if by_format else torch.full((5,), 9)
    cached = model.generate(prompt, pos, base, 12, eos=2, use_cache=True)
    plain = model.generate(prompt, pos, base, 12, eos=2, use_cache=False)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("log_length_scale", [False, True])
def test_cached_logits_match_full_forward(position, log_length_scale):
    model = _model(position, log_length_scale=log_length_scale)
    x = torch.randint(3, 24, (2, 10))
    pos = torch.arange(10).expand(2, 10)
    full = model(x, pos)
    caches = [b.mixer.init_cache(2, 10, "cpu", torch.float32) for b in model.blocks]
    first = model(x[:, :6], pos[:, :6], caches, start=0)
    rest = [model(x[:, t : t + 1], pos[:, t : t + 1], caches, start=t) for t in range(6, 10)]
    stepwise = torch.cat([first] + rest, dim=1)
    assert torch.allclose(full, stepwise, atol=1e-5)


def test_causality_future_tokens_do_not_change_past_logits():
    model = _model("rope")
    x = torch.randint(3, 24, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1 - 3) % 21 + 3
    assert torch.allclose(model(x)[:, :8], model(y)[:, :8], atol=1e-6)
    assert not torch.allclose(model(x)[:, 8:], model(y)[:, 8:])


def test_mixer_contract_shape_and_state_size():
    mixer = CausalSelfAttention(d_model=32, n_heads=4, position="none")
    x = torch.randn(3, 7, 32)
    ctx = SeqContext(positions=torch.arange(7).expand(3, 7))
    assert mixer(x, ctx).shape == (3, 7, 32)
    # Attention keeps one key and one value vector (d_model numbers each) per past token.
    assert mixer.state_size(100) == 2 * 32 * 100
    model = _model("none")
    assert model.state_size(50) == 2 * 2 * 32 * 50


def test_alibi_slopes_follow_press_et_al():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2 ** -(i + 1) for i in range(8)], dtype=torch.float32))
    assert len(alibi_slopes(6)) == 6


def test_position_schemes_that_use_ids_respond_to_them():
    for position, responds in [("abacus", True), ("coupling", True), ("learned", True), ("rope", False), ("none", False)]:
        model = _model(position)
        x = torch.randint(3, 24, (1, 6))
        a = model(x, torch.arange(6)[None])
        b = model(x, torch.arange(6)[None] + 7)
        assert (not torch.allclose(a, b)) == responds, position


def test_relative_coupling_reads_only_id_differences():
    model = _model("coupling_relative")
    x = torch.randint(3, 24, (1, 6))
    ids = torch.tensor([[4, 2, 1, 0, 2, 1]])
    a = model(x, ids)
    assert torch.allclose(a, model(x, ids + 9), atol=1e-6)  # a shift of every id changes nothing
    assert not torch.allclose(a, model(x, torch.tensor([[4, 1, 2, 0, 2, 1]])))


def test_relative_id_bias_by_hand():
    table = torch.arange(2 * 5, dtype=torch.float32).view(2, 5)  # 2 heads, clip 2: buckets -2..2
    q_ids, k_ids = torch.tensor([[3, 0]]), torch.tensor([[3, 4, 9, 0]])
    bias = relative_id_bias(table, q_ids, k_ids, clip=2)
    assert bias.shape == (1, 2, 2, 4)
    # differences k - q: query 3 -> (0, 1, 6, -3) -> buckets (2, 3, 4, 0); query 0 -> (3, 4, 9, 0) -> (4, 4, 4, 2)
    assert bias[0, 0].tolist() == [[2, 3, 4, 0], [4, 4, 4, 2]]
    assert bias[0, 1].tolist() == [[7, 8, 9, 5], [9, 9, 9, 7]]


@pytest.mark.parametrize("position", ["none", "alibi", "coupling_relative"])
def test_log_length_scale_trains_with_finite_gradients_under_every_mask(position):
    model = _model(position, log_length_scale=True).train()
    x = torch.randint(3, 24, (2, 40))
    ids = torch.arange(40).expand(2, 40)
    model.loss(x, x, ids).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.blocks[0].mixer.length_scale.grad.abs().sum() > 0


def test_config_rejects_bad_shapes():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValidationError):
        ModelConfig(n_layers=0)


def test_attention_bias_tables_get_no_weight_decay():
    from seqlab.train import TrainConfig
    from seqlab.train.trainer import make_optimizer

    model = _model("coupling_relative")
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(id(b.mixer.rel_bias) in no_decay for b in model.blocks)
    assert id(model.blocks[0].mixer.qkv.weight) in decay


def test_fused_swiglu_matches_its_reference_forward_and_backward():
    from seqlab.models.fused import swiglu, swiglu_reference

    h = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (h,))
    g = torch.randn(3, 5, 8, dtype=torch.float64)
    fast, ref = swiglu(h), swiglu_reference(h)
    assert torch.allclose(fast, ref)
    assert torch.allclose(torch.autograd.grad(fast, h, g)[0], torch.autograd.grad(ref, h, g)[0])
