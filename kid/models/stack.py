"""A stack of identical layers, either unrolled (``layers_0``, ``layers_1``...) or scanned.

Scanning (``nn.scan``) compiles one layer instead of L and stores parameters with a leading
``layers`` axis; ``scan_params`` / ``unscan_params`` convert between the two layouts.
Rematerialisation (``nn.remat``) trades recomputation for activation memory in training.

Layers have the scan-body signature
``layer((x, cache), layer_index, *broadcast_args, deterministic) -> ((x, cache), None)``.
``cache`` is a pytree of arrays stacked over all layers (leading layer axis), or None when not
decoding: each layer reads and writes its own entry ``layer_index`` of the stacked arrays
(``kid.models.layers.write_layer`` / ``read_layer``). Keeping the whole stack in the carry lets
XLA update the cache in place; slicing a layer's cache out and writing it back would copy the
whole cache every step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def make_layers(layer_cls: type[nn.Module], config: Any, num_layers: int, num_args: int):
    """Layer modules to assign in ``setup``: a list (unrolled) or one scanned module.

    num_args: the number of broadcast arguments between ``layer_index`` and ``deterministic``.
    """
    if config.remat:
        # Argument 0 is the module itself, 2 the layer index (a Python int when unrolled);
        # deterministic is the last argument.
        deterministic = num_args + 3
        layer_cls = nn.remat(
            layer_cls,
            prevent_cse=not config.scan_layers,
            static_argnums=(deterministic,) if config.scan_layers else (2, deterministic),
        )
    if not config.scan_layers:
        return [layer_cls(config) for _ in range(num_layers)]
    return nn.scan(
        layer_cls,
        variable_axes={"params": 0, "lora": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(0,) + (nn.broadcast,) * (num_args + 1),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(config)


def apply_layers(layers, x: jax.Array, cache, *args):
    """Run the stack from ``make_layers``; returns (x, cache)."""
    if isinstance(layers, list | tuple):
        for i, layer in enumerate(layers):
            (x, cache), _ = layer((x, cache), i, *args)
        return x, cache
    # The scanned layer index is only needed to address the cache.
    indices = None if cache is None else jnp.arange(jax.tree.leaves(cache)[0].shape[0])
    (x, cache), _ = layers((x, cache), indices, *args)
    return x, cache


def scan_params(tree):
    """Unrolled layout -> scanned: ``layers_0 .. layers_{n-1}`` become one ``layers`` subtree
    with a leading layer axis (works for "params" and "lora" trees)."""
    if not isinstance(tree, dict):
        return tree
    names = [f"layers_{i}" for i in range(len(tree))]
    stacked = [k for k in names if k in tree]
    out = {k: scan_params(v) for k, v in tree.items() if k not in stacked}
    if stacked:
        out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *(tree[k] for k in stacked))
    return out


def unscan_params(tree):
    """Scanned layout -> unrolled: the inverse of ``scan_params``."""
    if not isinstance(tree, dict):
        return tree
    out = {k: unscan_params(v) for k, v in tree.items() if k != "layers"}
    if "layers" in tree:
        num_layers = jax.tree.leaves(tree["layers"])[0].shape[0]
        for i in range(num_layers):
            out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], tree["layers"])
    return out
