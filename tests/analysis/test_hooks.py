"""Hook points and seqlab.analysis: empty hooks change nothing, caches have the right names and shapes,
patching a model with its own activations changes nothing, a patch reaches only later positions, and
functions never outlive the block that set them."""

import copy

import pytest
import torch

from seqlab.analysis import (
    caching,
    clear_hooks,
    head_outputs,
    hook_names,
    hooks,
    patch_activation,
    patch_vector,
    run_with_cache,
    run_with_hooks,
)
from seqlab.core.errors import BadInput
from seqlab.models import ModelConfig, build
from seqlab.models.hook_points import hook_points, strip_hook_points
from seqlab.models.icl_transformer import ICLModelConfig, build_icl_model

B, L, V, D = 3, 9, 24, 32
DECODERS = {
    "decoder": dict(),
    "hybrid": dict(mixers="mamba,attention", position="none", mamba={"d_state": 4}),
    "mixer_only": dict(mlp="none", bias=True),
    "encoder": dict(arch="encoder"),
}
MODELS = [*DECODERS, "icl", "looped"]


def _model(kind: str):
    """A tiny model in eval mode and the arguments of one forward pass."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if kind in DECODERS:
        model = build(ModelConfig(n_layers=2, d_model=D, n_heads=4, **DECODERS[kind]), vocab_size=V).eval()
        return model, (torch.randint(0, V, (B, L), generator=g),)
    arch = "looped" if kind == "looped" else "transformer"
    model = build_icl_model(ICLModelConfig(arch=arch, n_dims=3, n_layers=2, d_model=16, n_heads=2, max_points=8,
                                           loops=3, loop_window=2, canon=2)).eval()
    return model, (torch.randn(B, 5, 3, generator=g), torch.randn(B, 5, generator=g))


def _fired(kind: str) -> int:
    return 3 if kind == "looped" else 1  # the looped model's blocks run once per loop


# -- hook points cost nothing when empty -----------------------------------------------------------

@pytest.mark.parametrize("kind", MODELS)
def test_empty_hook_points_change_nothing(kind):
    model, args = _model(kind)
    plain = strip_hook_points(copy.deepcopy(model))  # the same weights with no hook point at all
    assert not hook_points(plain) and hook_points(model)
    want = plain(*args)
    assert torch.equal(model(*args), want)
    with hooks(model, {name: (lambda x, hook: None) for name in hook_names(model)}):
        assert torch.equal(model(*args), want)  # functions that only read
    assert torch.equal(model(*args), want)  # and after they are gone


@pytest.mark.parametrize("kind", MODELS)
def test_state_dict_has_no_hook_entries(kind):
    model, _ = _model(kind)
    keys = set(model.state_dict())
    assert not any("hook" in k for k in keys)
    assert keys == set(strip_hook_points(copy.deepcopy(model)).state_dict())
    model.load_state_dict(strip_hook_points(copy.deepcopy(model)).state_dict())  # checkpoints from before load


def test_decoder_state_dict_keys_are_the_ones_from_before_hooks():
    model = build(ModelConfig(n_layers=1, d_model=D, n_heads=4), vocab_size=V)
    assert list(model.state_dict()) == [
        "tok_emb.weight", "blocks.0.norm1.weight", "blocks.0.mixer.qkv.weight", "blocks.0.mixer.proj.weight",
        "blocks.0.norm2.weight", "blocks.0.mlp.up.weight", "blocks.0.mlp.down.weight", "norm.weight", "head.weight"]


# -- caching ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MODELS)
def test_cache_holds_every_hook_point_with_its_shape(kind):
    model, args = _model(kind)
    out, cache = run_with_cache(model, *args)
    assert torch.equal(out, model(*args))
    assert list(cache) == hook_names(model)
    first = cache["hook_embed"]
    assert isinstance(first, torch.Tensor)
    rows, length, width = first.shape  # the encoder's rows are its prefixes, B * L of them
    heads = model.config.n_heads
    for name in hook_names(model):
        if name == "hook_embed":
            continue
        got = cache[name]
        if _fired(kind) > 1:
            assert isinstance(got, list) and len(got) == _fired(kind), name
            got = got[-1]
        want = (rows, length, heads, width // heads) if name.endswith("hook_z") else (rows, length, width)
        assert got.shape == want, name
        assert not got.requires_grad


@pytest.mark.parametrize("kind", ["decoder", "hybrid", "mixer_only", "looped"])
def test_residual_stream_adds_up_from_block_to_block(kind):
    model, args = _model(kind)
    _, cache = run_with_cache(model, *args)
    pick = (lambda v: v[-1]) if _fired(kind) > 1 else (lambda v: v)  # the last loop
    c = {name: pick(v) for name, v in cache.items() if name != "hook_embed"}
    if kind != "looped":
        assert torch.equal(cache["hook_embed"], c["blocks.0.hook_resid_pre"])
    assert torch.equal(c["blocks.0.hook_resid_post"], c["blocks.1.hook_resid_pre"])
    for i in range(2):
        pre, post = c[f"blocks.{i}.hook_resid_pre"], c[f"blocks.{i}.hook_resid_post"]
        if f"blocks.{i}.hook_mlp_out" in c:
            mid = c[f"blocks.{i}.hook_resid_mid"]
            assert torch.equal(mid, pre + c[f"blocks.{i}.hook_mixer_out"])
            assert torch.equal(post, mid + c[f"blocks.{i}.hook_mlp_out"])
        else:
            assert torch.equal(post, pre + c[f"blocks.{i}.hook_mixer_out"])


def test_looped_blocks_fire_once_per_loop():
    model, args = _model("looped")
    _, cache = run_with_cache(model, *args, loops=4)
    assert isinstance(cache["hook_embed"], torch.Tensor)
    assert len(cache["blocks.1.hook_resid_post"]) == 4
    # h_t = f(h_{t-1} + e): the input to loop t is the output of loop t - 1 plus the injected embedding
    posts, pres = cache["blocks.1.hook_resid_post"], cache["blocks.0.hook_resid_pre"]
    assert torch.equal(pres[0], cache["hook_embed"])
    for t in range(1, 4):
        assert torch.equal(pres[t], posts[t - 1] + cache["hook_embed"])
    _, once = run_with_cache(model, *args, loops=1)
    assert isinstance(once["blocks.1.hook_resid_post"], torch.Tensor)


def test_names_pick_hook_points_and_caching_works_for_other_methods():
    model, (tokens,) = _model("decoder")
    _, cache = run_with_cache(model, tokens, names=lambda n: n.endswith("resid_post"))
    assert list(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    _, cache = run_with_cache(model, tokens, names="blocks.1.mixer.hook_z")
    assert list(cache) == ["blocks.1.mixer.hook_z"]
    with caching(model, ["hook_embed"]) as cache:
        model.generate(tokens[:, :4], torch.arange(4).expand(B, 4), torch.full((B,), 4), 3, eos=-1)
    assert [t.shape[1] for t in cache["hook_embed"]] == [4, 1, 1]  # the prompt, then one token at a time
    with caching(model, ["hook_embed"]) as cache:
        model.loss(tokens, tokens)
    assert cache["hook_embed"].shape == (B, L, D)


# -- patching --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["decoder", "hybrid", "mixer_only", "icl"])
def test_patching_with_own_activations_changes_nothing(kind):
    model, args = _model(kind)
    want, cache = run_with_cache(model, *args)
    for name in hook_names(model):
        zero = torch.zeros(cache[name].shape[2:])
        for fn in (lambda x, hook: x, patch_activation(cache[name]), patch_vector(zero, 2, mode="add"),
                   patch_vector(cache[name][:, 4], 4)):
            assert torch.equal(run_with_hooks(model, *args, fwd_hooks={name: fn}), want), name


@pytest.mark.parametrize("kind", ["decoder", "hybrid"])
@pytest.mark.parametrize("layer", [0, 1])
def test_a_patch_at_a_position_reaches_only_that_position_and_later(kind, layer):
    model, (tokens,) = _model(kind)
    want = model(tokens)
    p = 4
    vector = torch.randn(D)
    for point in ("hook_resid_pre", "hook_mixer_out", "hook_resid_post"):
        got = run_with_hooks(model, tokens, fwd_hooks={f"blocks.{layer}.{point}": patch_vector(vector, p, mode="add")})
        # Attention is exact here; Mamba's chunked scan may round later inputs into earlier outputs.
        assert torch.allclose(got[:, :p], want[:, :p], atol=1e-6, rtol=0), point
        if kind == "decoder":
            assert torch.equal(got[:, :p], want[:, :p]), point
        moved = (got - want).abs().amax(-1)  # (B, L)
        assert moved[:, p].min() > 1e-4, point
        if layer == 0:  # a later mixer reads it: every later position moves (after the last one, only p does)
            assert moved[:, p:].min() > 1e-4, point


def test_patch_positions_per_row_and_from_the_end():
    model, (tokens,) = _model("decoder")
    want = model(tokens)
    rows_at = torch.tensor([1, 5, L - 1])
    got = run_with_hooks(model, tokens, fwd_hooks={"hook_embed": patch_vector(torch.ones(B, D), rows_at, mode="add")})
    for b, p in enumerate(rows_at.tolist()):
        assert torch.equal(got[b, :p], want[b, :p])
        assert not torch.allclose(got[b, p], want[b, p])
    from_end = run_with_hooks(model, tokens, fwd_hooks={"hook_embed": patch_vector(torch.ones(D), -1)})
    at_last = run_with_hooks(model, tokens, fwd_hooks={"hook_embed": patch_vector(torch.ones(D), L - 1)})
    assert torch.equal(from_end, at_last)


def test_patch_arguments_are_checked():
    model, (tokens,) = _model("decoder")
    with pytest.raises(BadInput, match="mode"):
        patch_vector(torch.zeros(D), 0, mode="set")
    bad = [patch_vector(torch.zeros(D + 1), 0), patch_vector(torch.zeros(D), L),
           patch_vector(torch.zeros(D), torch.tensor([0, 1])), patch_activation(torch.zeros(B, L - 1, D))]
    for fn in bad:
        with pytest.raises(BadInput, match="hook_embed"):
            run_with_hooks(model, tokens, fwd_hooks={"hook_embed": fn})
    assert all(not p.fns for p in hook_points(model).values())


# -- heads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["decoder", "mixer_only"])
def test_head_outputs_sum_to_the_attention_output(kind):
    model, (tokens,) = _model(kind)
    _, cache = run_with_cache(model, tokens)
    for i, block in enumerate(model.blocks):
        per_head = head_outputs(block.mixer, cache[f"blocks.{i}.mixer.hook_z"])  # (B, L, H, D)
        assert per_head.shape == (B, L, 4, D)
        total = per_head.sum(2) + (block.mixer.proj.bias if block.mixer.proj.bias is not None else 0)
        assert torch.allclose(total, cache[f"blocks.{i}.hook_mixer_out"], atol=1e-6)


# -- setting and removing functions ----------------------------------------------------------------

def test_functions_are_removed_after_the_block_and_after_an_exception():
    model, (tokens,) = _model("decoder")
    seen = []

    def spy(x, hook):
        seen.append(hook.name)

    with hooks(model, {"blocks.0.hook_resid_pre": spy, "blocks.1.mixer.hook_z": spy}):
        model(tokens)
    assert seen == ["blocks.0.hook_resid_pre", "blocks.1.mixer.hook_z"]
    assert all(not p.fns for p in hook_points(model).values())

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # raised inside the forward pass
        run_with_hooks(model, tokens, fwd_hooks=[("hook_embed", spy), ("blocks.1.hook_mlp_out", boom)])
    with pytest.raises(KeyError):  # raised in the with block
        with caching(model):
            raise KeyError("x")
    assert all(not p.fns for p in hook_points(model).values())


def test_nested_blocks_keep_the_outer_functions_in_order():
    model, (tokens,) = _model("decoder")
    order = []

    def first(x, hook):
        order.append("first")

    def second(x, hook):
        order.append("second")

    name = "blocks.0.hook_resid_post"
    with hooks(model, [(name, first), (name, second)]):
        with hooks(model, {name: first}):
            model(tokens)
        assert hook_points(model)[name].fns == [first, second]
        model(tokens)
    assert order == ["first", "second", "first", "first", "second"]
    assert not hook_points(model)[name].fns
    hook_points(model)[name].fns.append(first)  # set by hand: clear_hooks takes it off
    clear_hooks(model)
    assert not hook_points(model)[name].fns


def test_unknown_names_raise_bad_input_naming_the_nearest():
    model, (tokens,) = _model("decoder")
    with pytest.raises(BadInput, match="did you mean 'blocks.1.hook_resid_post'"):
        run_with_cache(model, tokens, names=["blocks.1.hook_resid_pots"])
    with pytest.raises(BadInput, match="did you mean 'blocks.0.mixer.hook_z'"):  # TransformerLens's word
        run_with_hooks(model, tokens, fwd_hooks={"blocks.0.attn.hook_z": lambda x, h: None})
    with pytest.raises(BadInput, match="did you mean 'blocks.0.hook_mixer_out'"):
        run_with_hooks(model, tokens, fwd_hooks={"blocks.0.hook_attn_out": lambda x, h: None})
    with pytest.raises(BadInput, match="no hook point 'blocks.0.hook_mlp_out' in Decoder"):  # no MLP, no hook
        run_with_cache(_model("mixer_only")[0], tokens, names=["blocks.0.hook_mlp_out"])
    with pytest.raises(BadInput):  # a good name beside a bad one: nothing is set
        with hooks(model, {"hook_embed": lambda x, h: None, "nope": lambda x, h: None}):
            pass
    assert all(not p.fns for p in hook_points(model).values())


# -- training --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["decoder", "looped"])
def test_gradients_flow_and_training_steps_with_hooks_set(kind):
    model, args = _model(kind)
    model.train()
    steer = torch.zeros(model.config.d_model, requires_grad=True)  # a learned vector added mid-model
    opt = torch.optim.Adam([*model.parameters(), steer], lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    fwd = {"blocks.0.hook_resid_post": patch_vector(steer, 2, mode="add"), "blocks.1.mixer.hook_z": lambda x, h: None}
    with hooks(model, fwd), caching(model, ["blocks.1.hook_mlp_out"]) as cache:
        if kind == "decoder":
            loss = model.loss(args[0], torch.roll(args[0], -1, 1))
        else:
            loss = model.loss(*args)
        loss.backward()
        opt.step()
    assert cache["blocks.1.hook_mlp_out"] is not None
    assert steer.grad is not None and steer.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
