"""The Lexico study's choices: the best cache within a share of the full bytes, dictionaries per layer."""

import torch

from seqlab.kv_compression.lexico_study import best_within, learn_dictionaries, pca_bases, reconstruction_errors


def row(method, share, accuracy, dictionary=None):
    return {"method": method, "kv_share": share, "accuracy": accuracy, "dictionary": dictionary, "kv_bytes": share * 100}


def test_the_best_cache_within_a_share_is_the_most_accurate_that_fits():
    rows = [row("lexico", 0.2, 0.7, "universal-256"), row("lexico", 0.3, 0.99, "universal-256"),
            row("lexico", 0.1, 0.8, "random-256"), row("kivi", 0.2, 0.95)]
    assert best_within(rows, 0.25, "lexico")["accuracy"] == 0.8
    assert best_within(rows, 0.25, "lexico", "universal-256")["accuracy"] == 0.7
    assert best_within(rows, 0.05, "lexico") is None


def test_dictionaries_and_bases_are_learned_per_layer_for_keys_and_values():
    g = torch.Generator().manual_seed(0)
    vectors = [(torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g) @ torch.diag(torch.arange(8.0)))
               for _ in range(3)]
    dicts = learn_dictionaries(vectors, n_atoms=16, sparsity=2, steps=2, batch=64, lr=1e-3, seed=0)
    assert len(dicts) == 3 and all(k.shape == v.shape == (16, 8) for k, v in dicts)
    errors = reconstruction_errors(dicts, vectors, 2)
    assert len(errors["keys"]) == len(errors["values"]) == 3 and all(0 < e < 1.5 for e in errors["keys"])
    (mean, basis), _ = pca_bases(vectors, 3)[0]
    assert basis.shape == (3, 8) and torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-5)
