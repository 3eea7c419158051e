"""Hugging Face checkpoints: ``load_hf`` and ``save_hf`` (CONTRACT 4).

kid's parameter trees use the Hugging Face module names where they exist (``q_proj``,
``input_layernorm``...), so the tensor name of every parameter is derived from its path; T5's
``layer.N`` sub-blocks are renamed (``self_attn``, ``cross_attn``, ``mlp`` and their norms).
Kernels keep head structure (``[embed, heads, head_dim]``) where PyTorch stores ``[out, in]``
matrices; the converters below reshape and transpose.

Loading streams: one tensor is read, converted and placed onto its target sharding
(``jax.make_array_from_callback``, so each device receives only its shard) before the next is
read, so host memory holds one tensor beyond the loaded parameters. With
``scan_layers=True`` one stacked parameter (all layers of one tensor) is assembled at a time.

Saving merges LoRA adapters, gathers each parameter to the host and writes config.json and
model.safetensors into a temporary directory that is renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from safetensors.numpy import save_file

from kid import sharding
from kid.models import lora as lora_lib
from kid.models.build import build, param_axes
from kid.models.configs import DecoderConfig, ModelConfig, T5Config
from kid.models.hf_config import config_from_hf, config_to_hf
from kid.models.safetensors_io import CheckpointError, SafetensorsDir, read_json_object

# Tensors Hugging Face checkpoints may carry that kid does not keep (copies of the shared
# embedding, an unused relative bias, old rotary buffers).
IGNORED = re.compile(
    r"(encoder|decoder)\.embed_tokens\.weight"
    r"|decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight"
    r"|model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"
)

_T5_SUBLAYERS = {
    "encoder": {
        "self_attn_norm": "layer.0.layer_norm",
        "self_attn": "layer.0.SelfAttention",
        "mlp_norm": "layer.1.layer_norm",
        "mlp": "layer.1.DenseReluDense",
    },
    "decoder": {
        "self_attn_norm": "layer.0.layer_norm",
        "self_attn": "layer.0.SelfAttention",
        "cross_attn_norm": "layer.1.layer_norm",
        "cross_attn": "layer.1.EncDecAttention",
        "mlp_norm": "layer.2.layer_norm",
        "mlp": "layer.2.DenseReluDense",
    },
}
_TWO_INPUT_DIMS = ("o_proj", "o")  # Output projections contract [heads, head_dim].


# ----------------------------------------------------------------------------- names


def _layer(module_name: str) -> int | None:
    """Layer index of ``layers_3`` (3), None for a scanned ``layers`` stack."""
    return int(module_name.split("_")[1]) if "_" in module_name else None


def _hf_name(config: ModelConfig, path: tuple[str, ...], layer: int | None) -> str:
    """The Hugging Face tensor name of parameter ``path`` (of layer ``layer`` if scanned)."""
    leaf = "bias" if path[-1] == "bias" else "weight"
    if path[0] in ("shared", "lm_head"):
        return f"{path[0]}.weight"
    if isinstance(config, DecoderConfig):
        modules = list(path[:-1])
        if modules[0].startswith("layers"):
            modules[:1] = ["layers", str(layer)]
        return ".".join(["model", *modules, leaf])
    stack = path[0]
    if path[1] == "relative_attention_bias":
        return f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    if path[1] == "final_layer_norm":
        return f"{stack}.final_layer_norm.weight"
    sublayer = _T5_SUBLAYERS[stack][path[2]]
    return ".".join([stack, "block", str(layer), sublayer, *path[3:-1], leaf])


def _hf_names(config: ModelConfig, path: tuple[str, ...]) -> list[str]:
    """One name per layer for a scanned parameter, else one name."""
    stack_index = next((i for i, p in enumerate(path) if p.startswith("layers")), None)
    if stack_index is None:
        return [_hf_name(config, path, None)]
    layer = _layer(path[stack_index])
    if layer is not None:
        return [_hf_name(config, path, layer)]
    return [_hf_name(config, path, i) for i in range(_num_layers(config, path))]


def _num_layers(config: ModelConfig, path: tuple[str, ...]) -> int:
    if isinstance(config, T5Config):
        return config.num_layers if path[0] == "encoder" else config.num_decoder_layers
    return config.num_hidden_layers


# ----------------------------------------------------------------------------- layouts


def _hf_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of one layer's tensor for a kid parameter of ``shape``."""
    if path[-1] == "kernel":
        n_in = 2 if path[-2] in _TWO_INPUT_DIMS else 1
        return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))
    if path[-1] == "bias":
        return (math.prod(shape),)
    return shape


def _from_hf(path: tuple[str, ...], tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if path[-1] == "kernel":
        return tensor.T.reshape(shape)
    return tensor.reshape(shape)


def _to_hf(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    hf_shape = _hf_shape(path, array.shape)
    if path[-1] == "kernel":
        return np.ascontiguousarray(array.reshape(hf_shape[::-1]).T)
    return array.reshape(hf_shape)


# ----------------------------------------------------------------------------- loading


def _read(ckpt: SafetensorsDir, name: str, expected: tuple[int, ...], dtype) -> np.ndarray:
    if name not in ckpt:
        raise KeyError(f"{ckpt.where(name)}: missing (needed by the architecture in config.json)")
    tensor = ckpt.read(name)
    if tuple(tensor.shape) != tuple(expected):
        raise CheckpointError(
            f"{ckpt.where(name)} has shape {tuple(tensor.shape)}, expected "
            f"{tuple(expected)} from config.json"
        )
    return tensor.astype(dtype)


def _tied(ckpt: SafetensorsDir, config_ties: bool, embedding: str) -> bool:
    """Whether the output head is the embedding. As in transformers, a checkpoint that
    stores a different ``lm_head.weight`` is untied whatever the config says."""
    if "lm_head.weight" not in ckpt:
        if not config_ties:
            raise KeyError(
                f"{ckpt.where('lm_head.weight')}: missing, and config.json has "
                "tie_word_embeddings=false"
            )
        return True
    if not config_ties:
        return False
    return np.array_equal(ckpt.read("lm_head.weight"), ckpt.read(embedding))


def load_hf(
    path: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
    param_dtype=jnp.float32,
    scan_layers: bool = False,
) -> tuple[nn.Module, dict]:
    """Module and params of a local Hugging Face checkpoint directory (CONTRACT 4).

    Args:
      path: directory with config.json and model.safetensors (or sharded *.safetensors with
        model.safetensors.index.json) of a T5, Llama or Qwen2 model.
      mesh: place every parameter on its logical sharding over this mesh (default: the
        default device). Run the model under ``kid.sharding.use_mesh(mesh, rules)`` so its
        activations follow the same rules.
      rules: logical axis rules.
      param_dtype: dtype of the loaded parameters (and of the config's ``param_dtype``).
      scan_layers: stack layers for ``nn.scan`` (one compiled layer, leading layer axis).

    Raises:
      CheckpointError (a ValueError) naming the file and the field or tensor: invalid JSON,
      unsupported architecture, invalid config.json or index fields, an index entry outside
      the directory, a malformed safetensors file, a non-float tensor, unexpected tensors,
      shape mismatches. KeyError naming a missing tensor; FileNotFoundError for missing files.
    """
    directory = pathlib.Path(path)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"no config.json in {directory}")
    config = config_from_hf(
        read_json_object(config_path),
        str(config_path),
        param_dtype=param_dtype,
        scan_layers=scan_layers,
    )
    ckpt = SafetensorsDir(directory)
    embedding = "shared.weight" if isinstance(config, T5Config) else "model.embed_tokens.weight"
    config = dataclasses.replace(
        config, tie_word_embeddings=_tied(ckpt, config.tie_word_embeddings, embedding)
    )
    module = build(config)
    shapes, specs = param_axes(module)
    dtype = np.dtype(param_dtype)

    used: set[str] = set()
    flat = {}
    flat_specs = traverse_util.flatten_dict(specs)
    for key, shape in traverse_util.flatten_dict(shapes).items():
        names = _hf_names(config, key)
        stacked = "layers" in key  # A scanned stack: leading layer axis.
        layer_shape = shape.shape[1:] if stacked else shape.shape
        tensors = [
            _from_hf(key, _read(ckpt, n, _hf_shape(key, layer_shape), dtype), layer_shape)
            for n in names
        ]
        host = np.stack(tensors) if stacked else tensors[0]
        del tensors
        used.update(names)
        flat[key] = _place(host, mesh, tuple(flat_specs[key]), rules)
        del host
    used.add("lm_head.weight")  # Tied: checked equal to the embedding above.
    unexpected = sorted(n for n in ckpt.names() - used if not IGNORED.fullmatch(n))
    if unexpected:
        raise CheckpointError(
            f"unexpected tensors in {directory} for {config_path.name}'s "
            f"architecture: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    return module, traverse_util.unflatten_dict(flat)


def _place(host: np.ndarray, mesh: Mesh | None, names: tuple, rules) -> jax.Array:
    """Put one host array on the device(s); each device reads only its own shard."""
    if mesh is None:
        return jax.device_put(host)
    target = sharding.logical_sharding(names, host.shape, mesh, rules)
    return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


# ----------------------------------------------------------------------------- saving


def _hf_tensors(config: ModelConfig, params) -> Iterator[tuple[str, np.ndarray]]:
    """(name, PyTorch-layout host array) for every tensor of the checkpoint."""
    for key, value in traverse_util.flatten_dict(params).items():
        names = _hf_names(config, key)
        host = np.asarray(multihost_utils.process_allgather(value, tiled=True))
        per_layer = host if "layers" in key else [host]
        for name, array in zip(names, per_layer, strict=True):
            yield name, _to_hf(key, array)


def save_hf(module: nn.Module, params, path: str | os.PathLike, *, lora=None) -> pathlib.Path:
    """Write ``params`` (with ``lora`` adapters merged in) as a Hugging Face directory.

    The directory (config.json, model.safetensors) is written next to ``path`` under a
    temporary name and renamed into place; an existing directory at ``path`` is replaced.
    """
    config = module.config
    if lora is not None:
        if config.lora is None:
            raise ValueError(
                "lora adapters given but the module has no LoRAConfig "
                "(build it with kid.models.with_lora)"
            )
        params = lora_lib.merge(params, lora, config.lora.scale)
    config = dataclasses.replace(config, lora=None)
    tensors = dict(_hf_tensors(config, params))
    target = pathlib.Path(path)
    if jax.process_index() != 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if target.exists():
            old = tmp.with_name(tmp.name + ".old")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
