"""Backbones of any mixers per layer: configuration, cached decoding equal to a full pass, state sizes."""

import pytest
import torch

from seqlab.core.configs import parse_config
from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.train.config import TrainConfig
from seqlab.train.trainer import make_optimizer

torch.set_num_threads(1)

CONFIGS = [
    {"mixers": "attention", "canon": 2},
    {"mixers": "mamba", "mlp": "none", "norm": "rmsnorm", "position": "none"},
    {"mixers": "linear", "linear": {"feature_map": "taylor", "feature_dim": 8}},
    {"mixers": "linear", "linear": {"feature_map": "elu"}},
    {"mixers": "sliding_window", "sliding_window": {"window": 3}},
    {"mixers": "mamba,attention", "canon": 3},
    {"mixers": "linear,sliding_window", "sliding_window": {"window": 4}},
]


def small(**kw):
    torch.manual_seed(0)
    return build(ModelConfig(n_layers=kw.pop("n_layers", 2), d_model=32, n_heads=2, **kw), 23).eval()


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: kw["mixers"] + (f"+canon{kw['canon']}" if "canon" in kw else ""))
def test_cached_decoding_gives_the_logits_of_a_full_pass(kw):
    m = small(**kw)
    tokens = torch.randint(0, 23, (3, 11))
    full = m(tokens)
    caches = [b.mixer.init_cache(3, 11, "cpu", torch.float32) for b in m.blocks]
    if m.canon is not None:
        caches.append(m.canon.init_cache())
    with torch.no_grad():
        steps = [m(tokens[:, :5], caches=caches, start=0)]  # a prompt of 5, then one token at a time
        for t in range(5, 11):
            steps.append(m(tokens[:, t:t + 1], caches=caches, start=t))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: kw["mixers"])
def test_no_mixer_reads_the_future(kw):
    m = small(**kw)
    tokens = torch.randint(0, 23, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 23
    assert torch.allclose(m(tokens)[:, :7], m(changed)[:, :7], atol=1e-6)


def test_mixers_cycle_over_the_layers():
    c = ModelConfig(n_layers=5, mixers="mamba, attention")
    assert c.layer_mixers() == ["mamba", "attention", "mamba", "attention", "mamba"]  # MambaFormer's layout
    m = small(n_layers=3, mixers="mamba,attention,linear")
    assert [type(b.mixer).__name__ for b in m.blocks] == ["Mamba", "CausalSelfAttention", "LinearAttention"]


def test_state_size_of_a_hybrid_is_the_sum_of_its_layers_by_hand():
    m = small(n_layers=3, mixers="attention,mamba,sliding_window", sliding_window={"window": 8},
              mamba={"d_state": 4, "d_conv": 4, "expand": 2})
    L, D = 100, 32
    attention = 2 * D * L  # keys and values of every past token
    mamba = (2 * D) * 4 + (2 * D) * 3  # d_inner * d_state + d_inner * (d_conv - 1)
    window = 2 * D * 7  # the window less the arriving token
    assert m.state_size(L) == attention + mamba + window


def test_bad_mixers_are_one_clear_line():
    with pytest.raises(BadInput, match="unknown mixer 'mamab' \\(did you mean 'mamba'\\?\\)"):
        parse_config(ModelConfig, {"mixers": "attention,mamab"}, prefix="model.")
    with pytest.raises(BadInput, match="sliding_window"):
        parse_config(ModelConfig, {"mixers": "sliding_window", "position": "coupling_relative"}, prefix="model.")
    with pytest.raises(BadInput, match="canon"):
        parse_config(ModelConfig, {"canon": -1}, prefix="model.")


def test_mamba_decay_rates_and_skip_are_not_weight_decayed():
    m = small(mixers="mamba", mlp="none")
    opt = make_optimizer(m, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {n for n, p in m.named_parameters() if id(p) not in decayed}
    assert {"blocks.0.mixer.A_log", "blocks.0.mixer.D", "blocks.1.mixer.A_log"} <= names
    assert "blocks.0.mixer.in_proj.weight" not in names
