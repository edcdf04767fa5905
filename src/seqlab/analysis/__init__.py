"""Inside the model: hook points, activation caching and patching (TransformerLens's pattern, in plain torch).

Every seqlab model has named identity modules, hook points, at the places worth reading: the embeddings
(`hook_embed`), each block's residual stream before, between and after (`blocks.i.hook_resid_pre`,
`hook_resid_mid`, `hook_resid_post`), what its mixer and MLP add (`hook_mixer_out`, `hook_mlp_out`), and
attention's per-head outputs (`blocks.i.mixer.hook_z`). A function set on a hook point sees the
activation as the forward pass goes by and may return a replacement; with none set a hook point costs
one `if`. `hook_names(model)` lists them. Caching reads activations; patching writes one run's activation,
or a chosen vector, into another run, to find where a model keeps what it knows:

    from seqlab.analysis import patch_vector, run_with_cache, run_with_hooks
    logits, cache = run_with_cache(model, clean_tokens, names=lambda n: n.endswith("resid_post"))
    vector = cache["blocks.1.hook_resid_post"][0, 7]             # (D,): layer 1's stream at token 7
    hook = patch_vector(vector, position=7, mode="replace")      # write it into another prompt, same place
    patched = run_with_hooks(model, other_tokens, fwd_hooks={"blocks.1.hook_resid_post": hook})

`hooks(model, {name: fn})` sets functions for the length of a `with` block and `caching(model, names)`
caches within one (for `model.loss`, `generate`), both undone however the block ends. Names that do not
exist raise BadInput with the nearest real one. The looped transformer's blocks fire once per loop: their
cache entries are lists, one tensor per loop.
"""

from seqlab.analysis.heads import head_outputs
from seqlab.analysis.hooks import caching, clear_hooks, hook_names, hooks, run_with_cache, run_with_hooks, select
from seqlab.analysis.patching import patch_activation, patch_vector

__all__ = ["caching", "clear_hooks", "head_outputs", "hook_names", "hooks", "patch_activation", "patch_vector",
           "run_with_cache", "run_with_hooks", "select"]
