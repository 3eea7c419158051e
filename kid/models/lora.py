"""LoRA adapters: low-rank updates W + (alpha / rank) * A @ B kept in their own collection.

The adapters live in the ``"lora"`` variable collection beside ``"params"``, mirroring its tree
(``lora[...]["q_proj"] = {"a": [in.., rank], "b": [rank, out..]}`` next to
``params[...]["q_proj"]["kernel"]``), so a training step can differentiate the adapters alone
and keep the base frozen: ``module.apply({"params": base, "lora": adapters}, ...)``. Without a
``"lora"`` collection the model is the base model. ``merge`` folds adapters into the kernels
for export.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import traverse_util


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Which projections get adapters and how they are scaled.

    targets: projection module names (the Hugging Face / PEFT names: ``q_proj``, ``k_proj``,
    ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj`` for Llama/Qwen2; ``q``,
    ``k``, ``v``, ``o``, ``wi``, ``wi_0``, ``wi_1``, ``wo`` for T5).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "q", "k", "v", "o")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The dense update ``scale * A @ B`` with A [in.., rank] and B [rank, out..]."""
    return scale * jnp.tensordot(a, b, axes=1)


def merge(params, lora, scale: float):
    """Base params with every adapter folded into its kernel (for export).

    Adapters under a scanned ``layers`` subtree carry a leading layer axis, as do the kernels.
    """
    flat = traverse_util.flatten_dict(dict(params))
    for path, adapter in traverse_util.flatten_dict(dict(lora), is_leaf=_is_adapter).items():
        kernel_path = (*path, "kernel")
        if kernel_path not in flat:
            raise KeyError(f"LoRA adapter {'/'.join(path)} has no kernel in params")
        kernel = flat[kernel_path]
        a, b = adapter["a"], adapter["b"]
        if a.ndim + b.ndim - 2 == kernel.ndim:
            update = delta(a, b, scale)
        else:  # Scanned layers: a leading layer axis on a, b and the kernel.
            update = jax.vmap(lambda a, b: delta(a, b, scale))(a, b)
        flat[kernel_path] = (kernel + update.astype(kernel.dtype)).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


def _is_adapter(path, node) -> bool:
    del path
    return isinstance(node, dict) and set(node) == {"a", "b"}
