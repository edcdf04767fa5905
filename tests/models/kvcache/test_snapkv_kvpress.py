"""seqlab's SnapKVCache keeps, per layer and head, exactly the prompt positions NVIDIA kvpress's
`SnapKVPress` keeps, on the same model: a seqlab decoder exported as a transformers Llama.

What kvpress 0.5.5 does (kvpress/presses/snapkv_press.py, scorer_press.py, base_press.py), and so the
SnapKVCache settings that match it:
- it compresses in a forward hook after each attention layer's prefill, so the layer's own output is
  exact attention over the whole prompt, as in seqlab's cache contract;
- the last `window_size` queries (recomputed from the layer's hidden states with q_proj and the model's
  own cos/sin, or, with eager attention, the model's attention weights themselves) attend causally over
  the prompt, softmax in float32 over every key they see; the weights over the first Lp - window keys
  are averaged over the window's queries (seqlab sums: the same ranking) and avg-pooled with
  `kernel_size`, stride 1, padding kernel // 2; kvpress has no max pooling, so pooling="avg";
- the window's own tokens get the largest score plus one, so they are always kept;
- each head keeps the top n_kept = int(Lp * (1 - compression_ratio)) positions, window included:
  seqlab's budget is n_kept. kvpress stores them in score order, seqlab in prompt order, so the
  positions are compared as sets.
kvpress's kept keys are matched to the keys of an uncompressed run: its hook compresses after the
attention layer has run, so the keys before compression are the uncompressed run's, bit for bit.
"""

import json

import pytest
import torch

pytest.importorskip("kvpress")

from kvpress import SnapKVPress  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import DynamicCache, LlamaForCausalLM  # noqa: E402

from seqlab.export.hf import llama_config, llama_state_dict  # noqa: E402
from seqlab.models import ModelConfig, build  # noqa: E402
from seqlab.models.kvcache.eviction import SnapKVCache, snapkv_scores  # noqa: E402

VOCAB, BATCH, PROMPT = 64, 2, 48
SHARPEN = 10.0  # query and key weights times this: the logits times 100, so attention is far from flat
TOL = 1e-4  # max |logit difference| of the export, float32 (tests/export)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-layer RoPE decoder with sharpened attention, and its export (the files `seqlab export --to hf`
    writes: config.json and model.safetensors, from the exporter's own mapping)."""
    torch.manual_seed(0)
    config = ModelConfig(n_layers=2, d_model=64, n_heads=2, position="rope", mlp="swiglu", norm="rmsnorm")
    model = build(config, VOCAB).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.mixer.qkv.weight[: 2 * config.d_model] *= SHARPEN  # rows [q; k; v]
    out = tmp_path_factory.mktemp("snapkv-export")
    (out / "config.json").write_text(json.dumps(llama_config(config, VOCAB, PROMPT, model.norm.eps)))
    save_file(llama_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    prompt = torch.randint(0, VOCAB, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))
    return model, out, prompt


def _hf_keys(model_dir, prompt, attention, press=None) -> list[torch.Tensor]:
    """Each layer's cached keys (B, H, T, hd) after a prefill of `prompt`, through `press` if given."""
    hf = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation=attention).eval()
    cache = DynamicCache()
    with torch.no_grad():
        if press is None:
            hf(input_ids=prompt, past_key_values=cache)
        else:
            with press(hf):
                hf(input_ids=prompt, past_key_values=cache)
    return [layer.keys for layer in cache.layers]


def _positions_of(kept: torch.Tensor, full: torch.Tensor) -> list[list[list[int]]]:
    """For each (batch, head), the prompt positions whose full key equals a kept key, each found once."""
    same = (kept[:, :, :, None] == full[:, :, None]).all(-1)  # (B, H, T_kept, T_full)
    assert (same.sum(-1) == 1).all(), "a kept key matches no prompt key, or several"
    positions = same.float().argmax(-1)  # (B, H, T_kept)
    return [[sorted(row.tolist()) for row in heads] for heads in positions]


class RecordingSnapKV(SnapKVCache):
    """SnapKVCache that keeps the prompt's queries and keys it chose with, to look at its scores."""

    def prefill(self, q, k, v):
        self.q, self.prompt_k = q, k
        super().prefill(q, k, v)


def _margin(cache: RecordingSnapKV) -> torch.Tensor:
    """(B, H): how far the last kept earlier key's score is above the first dropped one's, relative to the
    best score. Far above float32 rounding, seqlab's fused qkv and Llama's separate projections (equal
    to about 1e-7) cannot swap a kept and a dropped position, so the comparison is not decided by rounding."""
    scores = snapkv_scores(cache.q, cache.prompt_k, cache.window, cache.kernel, cache.pooling)
    ranked = scores.sort(-1, descending=True).values
    n = cache.budget - cache.window
    return (ranked[..., n - 1] - ranked[..., n]) / ranked[..., 0]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # kvpress recomputes the queries / reads the weights
@pytest.mark.parametrize("ratio, window, kernel", [(0.5, 8, 5), (0.75, 4, 3), (0.25, 16, 7), (0.5, 8, 1)])
def test_snapkv_keeps_what_kvpress_keeps(exported, attention, ratio, window, kernel):
    model, model_dir, prompt = exported
    full = _hf_keys(model_dir, prompt, attention)
    pressed = _hf_keys(model_dir, prompt, attention,
                       SnapKVPress(compression_ratio=ratio, window_size=window, kernel_size=kernel))
    budget = int(PROMPT * (1 - ratio))  # kvpress's n_kept
    assert [k.shape[2] for k in pressed] == [budget] * model.config.n_layers

    made = []

    def snapkv(i, B, H, hd):
        made.append(RecordingSnapKV(B, H, hd, budget, window=window, kernel=kernel, pooling="avg"))
        return made[-1]

    with torch.no_grad():
        logits = model(prompt, None, model.new_caches(BATCH, PROMPT, prompt.device, snapkv), start=0)
        hf_logits = LlamaForCausalLM.from_pretrained(model_dir).eval()(input_ids=prompt).logits
    assert (logits - hf_logits).abs().max() <= TOL  # the prefill is exact on both sides: the same model

    for layer, (cache, kept, keys) in enumerate(zip(made, pressed, full)):
        assert (_margin(cache) > 1e-4).all(), f"layer {layer}: scores too close at the cut to compare"
        theirs = _positions_of(kept, keys)
        ours = cache.kept_positions().tolist()
        assert ours == theirs, f"layer {layer}: seqlab keeps {ours}, kvpress {theirs}"
        # The same keys, not only the same positions: seqlab's RoPE is Llama's (seqlab stores 16 bits).
        rows = cache.kept_positions()[..., None].expand(-1, -1, -1, keys.shape[-1])
        assert torch.allclose(cache.dense()[0].float(), keys.gather(2, rows), atol=2e-3, rtol=1e-3)
