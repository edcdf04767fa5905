"""The model registry: every backbone `model.arch` can name, registered by the file that defines it.

An entry is the model's class; its `inputs` says what it reads: "tokens" (token ids, built from a
ModelConfig and a vocabulary size: text and token runs) or "vectors" (in-context prompts of vectors,
built from its own config: in-context runs).
"""

from __future__ import annotations

from seqlab.core.registry import Registry

# Listed by `seqlab models` in registration order (the order of the imports in models/__init__.py).
MODELS = Registry("model")
