"""Shared helpers for the model tests: fast random parameters and jitted apply."""

from __future__ import annotations

import functools

import jax
import numpy as np

from kid import models


def random_params(module, seed: int = 0, scale: float = 0.3):
    """Random parameters of the right shapes, drawn with numpy (no init compilation).

    Norm scales are drawn around 1, embeddings with unit scale (as T5 initialises them), so
    logits are far from uniform.
    """
    shapes, _ = models.param_axes(module)
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        name = jax.tree_util.keystr(path)
        centre = 1.0 if "norm" in name else 0.0
        std = 1.0 if "embedding" in name else scale
        return (centre + std * rng.standard_normal(shape.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.cache
def jitted_apply(module):
    """``module.apply`` jitted once per module, with method/max_new_tokens static."""
    return jax.jit(module.apply, static_argnames=("method", "max_new_tokens"))
