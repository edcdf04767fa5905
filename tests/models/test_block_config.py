"""One block config for every backbone: the in-context learners take every mixer setting the decoder
takes, and config.json files that hold the old flat mixer keys still read as the same typed config."""

import pytest
import torch

from seqlab.core.configs import apply_overrides, parse_config
from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.block_config import FLAT_MIXER_KEYS
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model

# The model sections of config.json as runs wrote them before the mixers had sections of their own.
OLD_DECODER = {"arch": "decoder", "n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": None, "mlp": "gelu",
               "mixers": "mamba,linear,sliding_window", "d_state": 8, "d_conv": 3, "expand": 3, "feature_map": "elu",
               "feature_dim": 4, "window": 5, "canon": 2, "norm": "layernorm", "position": "rope",
               "max_positions": 1024, "relative_clip": 3, "log_length_scale": False, "rope_base": 10000.0,
               "bias": False, "dropout": 0.0, "tie_embeddings": True}
OLD_ICL = {"arch": "transformer", "n_dims": 3, "n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": None, "mlp": "gelu",
           "norm": "layernorm", "position": "none", "max_points": 8, "token_types": False, "canon": 0,
           "mixers": "mamba,attention", "d_state": 4, "expand": 3, "dropout": 0.0, "loops": 12, "loop_window": 12}


def test_old_flat_keys_read_as_the_new_sections():
    old = parse_config(ModelConfig, OLD_DECODER, prefix="model.")
    flat = {k: v for k, v in OLD_DECODER.items() if k not in FLAT_MIXER_KEYS}
    new = parse_config(ModelConfig, {**flat, "mamba": {"d_state": 8, "d_conv": 3, "expand": 3},
                                     "linear": {"feature_map": "elu", "feature_dim": 4},
                                     "sliding_window": {"window": 5}}, prefix="model.")
    assert old == new and old.to_json() == new.to_json()
    assert not set(FLAT_MIXER_KEYS) & set(old.to_json())  # what a new config.json stores is the new form
    torch.manual_seed(0)
    a = build(old, 23).state_dict()
    torch.manual_seed(0)
    b = build(new, 23).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

    icl = parse_config(ICLModelConfig, OLD_ICL, prefix="model.")
    assert (icl.mamba.d_state, icl.mamba.expand, icl.mamba.d_conv) == (4, 3, 4)


def test_old_flat_keys_on_the_command_line_and_both_spellings_at_once():
    c = parse_config(ModelConfig, apply_overrides({}, ["model.window=7", "model.d_state=2"])["model"], prefix="model.")
    assert (c.sliding_window.window, c.mamba.d_state) == (7, 2)
    same = apply_overrides({}, ["model.d_state=2", "model.mamba.d_state=2"])["model"]
    assert parse_config(ModelConfig, same).mamba.d_state == 2
    both = apply_overrides({}, ["model.d_state=2", "model.mamba.d_state=3"])["model"]
    with pytest.raises(BadInput, match=r"^invalid model: d_state=2 and mamba.d_state=3 disagree"):
        parse_config(ModelConfig, both, prefix="model.")
    with pytest.raises(BadInput, match=r"^invalid value for 'model.mamba.d_state'"):
        parse_config(ModelConfig, {"d_state": 0}, prefix="model.")


def test_a_mixer_setting_of_the_in_context_backbone_reaches_its_mixer():
    keys = ["model.n_dims=3", "model.n_layers=3", "model.d_model=32", "model.n_heads=2", "model.max_points=8",
            "model.mixers=linear,sliding_window,mamba", "model.linear.feature_map=elu", "model.sliding_window.window=3",
            "model.mamba.d_conv=2"]
    for arch in ("transformer", "looped"):
        c = parse_config(ICLModelConfig, apply_overrides({}, [*keys, f"model.arch={arch}"])["model"], prefix="model.")
        model = build_icl_model(c)
        linear, window, mamba = (b.mixer for b in model.blocks)
        assert (linear.kind, window.window, mamba.d_conv) == ("elu", 3, 2)
        assert model(torch.randn(2, 5, 3), torch.randn(2, 5)).shape == (2, 5)


def test_block_settings_beyond_the_old_copies_work_in_context():
    c = ICLModelConfig(n_dims=3, d_model=32, n_heads=2, max_points=8, bias=True, log_length_scale=True)
    attention = build_icl_model(c).blocks[0].mixer
    assert attention.qkv.bias is not None and attention.length_scale is not None
    with pytest.raises(BadInput, match="sliding_window attention takes position"):
        parse_config(ICLModelConfig, {"mixers": "sliding_window", "log_length_scale": True}, prefix="model.")
