"""Model construction: module from config, parameter shapes/axes, sharded initialisation.

Parameters are returned unboxed (plain arrays); their logical axis names come from
``param_axes`` (an ``eval_shape`` of ``init``), so initialisation and checkpoint loading can
place every array directly onto its mesh sharding.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kid import sharding
from kid.models.configs import DecoderConfig, ModelConfig, T5Config
from kid.models.decoder import DecoderLM
from kid.models.lora import LoRAConfig
from kid.models.t5 import T5


def build(config: ModelConfig) -> nn.Module:
    """The flax module for a config."""
    if isinstance(config, T5Config):
        return T5(config)
    if isinstance(config, DecoderConfig):
        return DecoderLM(config)
    raise TypeError(f"not a model config: {type(config).__name__}")


def is_encoder_decoder(module: nn.Module) -> bool:
    return isinstance(module.config, T5Config)


def _init_variables(module: nn.Module, rng: jax.Array):
    ids = jnp.zeros((1, 1), jnp.int32)
    decoder_ids = ids if is_encoder_decoder(module) else None
    return module.init(rng, ids, jnp.ones_like(ids), decoder_ids)


def param_axes(module: nn.Module, collection: str = "params"):
    """(shapes, logical PartitionSpecs) of a collection, without allocating it."""
    boxed = jax.eval_shape(lambda: _init_variables(module, jax.random.key(0))[collection])
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


def shardings(
    module: nn.Module,
    mesh: Mesh,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
    collection: str = "params",
):
    """NamedShardings of a collection on ``mesh`` (non-dividing axes replicated)."""
    shapes, specs = param_axes(module, collection)
    return sharding.tree_shardings(shapes, specs, mesh, rules)


def init(
    module: nn.Module,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
    collection: str = "params",
):
    """Random initial variables of ``collection`` (``"params"`` or ``"lora"``), created
    directly in their shardings when a mesh is given.

    Traceable: with ``rng`` a tracer (``init`` called inside an outer ``jax.jit`` /
    ``jax.eval_shape``) the variables become part of the outer computation, constrained to
    the same shardings; the same key gives the same values as an eager call (up to float
    rounding: the eager call compiles unoptimised on CPU).
    """

    def create(rng):
        return nn.unbox(_init_variables(module, rng)[collection])

    out_shardings = None if mesh is None else shardings(module, mesh, rules, collection)
    # Initialisation runs once: on CPU, XLA spends far longer optimising the many random
    # number kernels (seconds for a tiny model) than running them unoptimised. Only a
    # top-level jit takes compiler options; a nested one is compiled with the outer one.
    top_level = not isinstance(rng, jax.core.Tracer)
    cpu = jax.default_backend() == "cpu"
    options = {"xla_backend_optimization_level": 0} if cpu and top_level else None
    return jax.jit(create, out_shardings=out_shardings, compiler_options=options)(rng)


def with_lora(module: nn.Module, lora: LoRAConfig) -> nn.Module:
    """The same model with LoRA adapters on ``lora.targets``; base params are unchanged,
    adapters are initialised with ``init(module, rng, collection="lora")`` (B = 0)."""
    return build(dataclasses.replace(module.config, lora=lora))
