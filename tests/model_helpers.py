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


def uncached_logits(module, variables, ids, mask, tokens) -> np.ndarray:
    """Forward logits [batch, new, vocab] predicting each of ``tokens`` [batch, new] after
    the prompts ``ids``: the reference that cached decoding must reproduce."""
    new = tokens.shape[1]
    if models.is_encoder_decoder(module):
        start = np.full((len(ids), 1), module.config.decoder_start_token_id)
        decoder_ids = np.concatenate([start, tokens[:, :-1]], 1)
        return np.asarray(module.apply(variables, ids, mask, decoder_ids))
    full = np.concatenate([ids, tokens], 1)
    full_mask = np.concatenate([mask, np.ones_like(tokens)], 1)
    logits = module.apply(variables, full, full_mask)
    return np.asarray(logits)[:, ids.shape[1] - 1 : ids.shape[1] - 1 + new]


@functools.cache
def jitted_apply(module):
    """``module.apply`` jitted once per module, with method/max_new_tokens static."""
    return jax.jit(module.apply, static_argnames=("method", "max_new_tokens"))
