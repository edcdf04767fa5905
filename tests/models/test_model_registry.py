"""The model registry, over whatever is registered: each backbone says what it reads and what it is, and a
token run's model.arch is checked with the nearest name."""

import pytest
import torch

from seqlab.core.errors import BadInput
from seqlab.models import DESCRIPTIONS, MODELS, ModelConfig, build, check_arch, token_models


def test_every_model_is_described_and_reads_tokens_or_vectors():
    assert list(DESCRIPTIONS) == list(MODELS)
    for name, model in MODELS.items():
        assert DESCRIPTIONS[name] == MODELS.describe(name) and DESCRIPTIONS[name].strip(), name
        assert model.inputs in ("tokens", "vectors"), name


@pytest.mark.parametrize("name", token_models())
def test_every_token_model_builds_from_a_model_config(name):
    check_arch(name)
    torch.manual_seed(0)
    model = build(ModelConfig(arch=name, n_layers=1, d_model=16, n_heads=2), 11)
    assert model(torch.randint(0, 11, (2, 5))).shape == (2, 5, 11)


def test_model_arch_errors_are_one_line():
    tokens = token_models()
    with pytest.raises(BadInput, match=f"unknown model 'zzz' \\(known: {', '.join(sorted(tokens))}\\)"):
        check_arch("zzz")
    with pytest.raises(BadInput, match=f"unknown model '{tokens[0]}x' \\(did you mean '{tokens[0]}'\\?\\)"):
        check_arch(tokens[0] + "x")
    for name, model in MODELS.items():
        if model.inputs == "vectors":
            with pytest.raises(BadInput, match="prompts of vectors"):
                check_arch(name)
