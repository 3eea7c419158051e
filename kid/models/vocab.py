"""Vocabulary growth: room for tokens a tokenizer adds (schema markers, SQL keywords).

New embedding rows (and new output-head columns of untied models) are the mean of the
existing ones, so added tokens start as an "average token" rather than noise and the
model's predictions on old tokens are unchanged.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kid import sharding
from kid.models.build import build, shardings


def _grow(array: jax.Array, new_size: int, axis: int) -> jax.Array:
    extra = new_size - array.shape[axis]
    mean = jnp.mean(array.astype(jnp.float32), axis=axis, keepdims=True).astype(array.dtype)
    return jnp.concatenate([array, jnp.repeat(mean, extra, axis=axis)], axis=axis)


def resize_vocab(
    module: nn.Module,
    params,
    vocab_size: int,
    *,
    mesh: Mesh | None = None,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
):
    """(module, params) with ``vocab_size`` >= the current one; sharded on ``mesh`` if given."""
    config = module.config
    if vocab_size < config.vocab_size:
        raise ValueError(f"resize_vocab only grows: {vocab_size} < {config.vocab_size}")
    new_module = build(dataclasses.replace(config, vocab_size=vocab_size))
    params = dict(params)
    embed_key = "shared" if "shared" in params else "embed_tokens"
    params[embed_key] = {"embedding": _grow(params[embed_key]["embedding"], vocab_size, 0)}
    if "lm_head" in params:
        params["lm_head"] = {"kernel": _grow(params["lm_head"]["kernel"], vocab_size, 1)}
    if mesh is not None:
        params = jax.device_put(params, shardings(new_module, mesh, rules))
    return new_module, params
