"""Device meshes and logical axis rules.

Models name every parameter and key activation axis logically (``embed``, ``heads``,
``activation_batch``...). A rules list maps those names to mesh axes (``data``, ``fsdp``,
``tensor``), so the same model code runs on one CPU or on a pod slice. Unlike flax's own
``logical_to_mesh_axes``, the functions here look at array shapes: a dimension that does not
divide its mesh axis (a 14-head model on a 4-way tensor axis, a batch of 3 on 8 devices) is
replicated instead of raising.

Meshes are built with ``AxisType.Auto``: flax linen's logical constraints need Auto axes, and
``jax.make_mesh`` now defaults to Explicit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# (logical, mesh) pairs; the first pair whose mesh axes are free and divide the dimension
# wins, otherwise the dimension is replicated. Weights and activations have separate names.
DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # Weights.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("relpos_buckets", None),
    ("lora_rank", None),
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_head_dim", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with Auto axis types from ``{axis_name: size}``; one size may be -1 (the rest).

    Example: ``make_mesh({"data": -1, "tensor": 2})`` on 8 devices is a 4 x 2 mesh.
    """
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(shape)
    sizes = [int(shape[name]) for name in names]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(shape)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh {dict(shape)} does not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(names, sizes, strict=True))} needs {math.prod(sizes)} devices, have {len(devices)}"
        )
    return jax.make_mesh(
        tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
    )


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int], mesh_shape: Mapping[str, int], rules: Rules
) -> PartitionSpec:
    """The PartitionSpec for an array of ``shape`` whose axes have logical ``names``.

    For each dimension the rules are tried in order; mesh axes missing from the mesh, already
    used by an earlier dimension, or not dividing the dimension are dropped (replication).
    """
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec: list[MeshAxes] = []
    for name, size in zip(names, shape, strict=True):
        chosen: tuple[str, ...] = ()
        for logical, axes in rules:
            if logical != name or name is None:
                continue
            chosen, product = (), 1
            for axis in _as_tuple(axes):
                axis_size = mesh_shape.get(axis)
                if axis_size is None or axis in used or size % (product * axis_size):
                    continue
                chosen += (axis,)
                product *= axis_size
            if chosen:
                break
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
    return PartitionSpec(*spec)


def logical_sharding(
    names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> NamedSharding:
    """A NamedSharding for one array with logical axis ``names``."""
    return NamedSharding(mesh, logical_to_spec(names, shape, dict(mesh.shape), rules))


def tree_shardings(shapes, logical_specs, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Shardings for a tree of arrays (or ShapeDtypeStructs) given a matching tree of logical
    PartitionSpecs, e.g. from ``flax.linen.get_partition_spec``."""
    return jax.tree.map(
        lambda x, names: logical_sharding(tuple(names), x.shape, mesh, rules), shapes, logical_specs
    )


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation from logical names, under the current mesh
    (``jax.set_mesh``) and flax rules (``nn.logical_axis_rules``); a no-op without either."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return x
    spec = logical_to_spec(names, x.shape, dict(mesh.shape), rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[Mesh]:
    """Context in which model code traces onto ``mesh`` with logical ``rules``."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield mesh
