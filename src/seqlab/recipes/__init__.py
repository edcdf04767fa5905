"""Recipes: one module per reproduced result, each a spec (paper, claims, budgets) plus a run."""

from seqlab.recipes.base import RECIPES, Claim, Recipe, get_recipe, run_recipe
from seqlab.recipes import (  # noqa: F401  (registers the recipes)
    addition, chai, decoding, entp, icl_newton, icl_regression, length_generalization, lexico, looped, mambaformer, mqar,
    multi_bin_batching, needles, ppd, self_improve, superposition, task_vectors, tvp,
)

__all__ = ["RECIPES", "Claim", "Recipe", "get_recipe", "run_recipe"]
