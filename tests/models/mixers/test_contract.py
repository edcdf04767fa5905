"""The contract every registered mixer keeps, run over whatever MIXERS holds: its settings are a section of
every backbone's config, set by dotted key, reaching the module; a mistyped key is one line naming the
nearest; a model of it decodes with its cache as a full pass does and never reads the future."""

import typing

import pytest
import torch

from seqlab.core.configs import apply_overrides, parse_config
from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model
from seqlab.models.mixers import MIXERS, make_mixer, parse_mixers

torch.set_num_threads(1)

WITH_SETTINGS = [name for name, spec in MIXERS.items() if spec.settings is not None]
SETTINGS = [(name, key) for name in WITH_SETTINGS for key in MIXERS[name].settings.model_fields]
BACKBONES = {"decoder": ModelConfig, "in-context": ICLModelConfig}


def other_value(field):
    """A valid value of a setting other than its default."""
    default, kind = field.default, field.annotation
    if typing.get_origin(kind) is typing.Literal:
        return next(v for v in typing.get_args(kind) if v != default)
    if kind is bool:
        return not default
    if kind is int:
        return default + 1
    if kind is float:
        return default * 2 if default else 0.5
    pytest.fail(f"give other_value a case for settings of type {kind}")


def small(backbone: str, name: str, extra: list[str] = ()):
    """A two-layer model of mixer `name` (then attention) from dotted keys, as the command line gives them."""
    keys = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", f"model.mixers={name},attention", *extra]
    if backbone != "decoder":
        keys += ["model.n_dims=3", "model.max_points=8"]
    config = parse_config(BACKBONES[backbone], apply_overrides({}, keys)["model"], prefix="model.")
    torch.manual_seed(0)
    return (build(config, 23) if backbone == "decoder" else build_icl_model(config)).eval()


def run(model, backbone: str):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if backbone == "decoder":
            return model(torch.randint(0, 23, (2, 12), generator=g))
        return model(torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, generator=g))


def fingerprint(model, backbone: str):
    """What a setting can change: parameter shapes, the state each mixer keeps, the output."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, [b.mixer.state_size(1000) for b in model.blocks], run(model, backbone)


def test_every_mixer_has_a_description_and_the_registry_keeps_registration_order():
    for name in MIXERS:
        assert MIXERS.describe(name).strip(), name
    assert parse_mixers(", ".join(MIXERS)) == list(MIXERS)
    known = ", ".join(MIXERS)
    with pytest.raises(ValueError, match=f"unknown mixer 'qqq' \\(known: {known}\\)"):
        parse_mixers("qqq")
    with pytest.raises(BadInput, match="unknown mixer"):
        make_mixer("qqq", ModelConfig())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name,key", SETTINGS, ids=lambda v: str(v))
def test_a_setting_round_trips_by_dotted_key_and_reaches_the_mixer(backbone, name, key):
    field = MIXERS[name].settings.model_fields[key]
    value = other_value(field)
    cls = BACKBONES[backbone]
    c = parse_config(cls, apply_overrides({}, [f"model.{name}.{key}={value}"])["model"], prefix="model.")
    assert getattr(getattr(c, name), key) == value
    assert c.to_json()[name][key] == value
    assert parse_config(cls, c.to_json()) == c  # as config.json stores it and a resumed run reads it back
    setting = [f"model.{name}.{key}={value}"]
    default, changed = (fingerprint(small(backbone, name, extra), backbone) for extra in ([], setting))
    same = default[:2] == changed[:2] and torch.equal(default[2], changed[2])
    assert not same, f"model.{name}.{key}={value} built the same {backbone} model as the default"


@pytest.mark.parametrize("name,key", SETTINGS, ids=lambda v: str(v))
def test_a_mistyped_setting_is_one_line_naming_the_nearest(name, key):
    with pytest.raises(BadInput) as e:
        parse_config(ModelConfig, apply_overrides({}, [f"model.{name}.{key[:-1]}=1"])["model"], prefix="model.")
    assert str(e.value) == f"unknown key 'model.{name}.{key[:-1]}' (did you mean 'model.{name}.{key}'?)"


def test_mixer_sections_are_the_registered_mixers_with_settings():
    for cls in BACKBONES.values():
        sections = [k for k, f in cls.model_fields.items() if f.annotation in {s.settings for s in MIXERS.values()}]
        assert sections == WITH_SETTINGS


@pytest.mark.parametrize("name", list(MIXERS))
def test_cached_decoding_gives_the_logits_of_a_full_pass(name):
    m = small("decoder", name)
    tokens = torch.randint(0, 23, (3, 11))
    full = m(tokens)
    caches = [b.mixer.init_cache(3, 11, "cpu", torch.float32) for b in m.blocks]
    with torch.no_grad():
        steps = [m(tokens[:, :5], caches=caches, start=0)]  # a prompt of 5, then one token at a time
        for t in range(5, 11):
            steps.append(m(tokens[:, t:t + 1], caches=caches, start=t))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", list(MIXERS))
def test_no_mixer_reads_the_future(name, backbone):
    m = small(backbone, name)
    if backbone == "decoder":
        tokens = torch.randint(0, 23, (2, 12))
        changed = tokens.clone()
        changed[:, 7:] = (changed[:, 7:] + 1) % 23
        assert torch.allclose(m(tokens)[:, :7], m(changed)[:, :7], atol=1e-6)
    else:  # prediction i reads pairs before i and x_i
        xs, ys = torch.randn(2, 6, 3), torch.randn(2, 6)
        later = ys.clone()
        later[:, 3:] += 5.0
        assert torch.allclose(m(xs, ys)[:, :4], m(xs, later)[:, :4], atol=1e-5)
