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
from kid.models.safetensors_io import SafetensorsDir

SUPPORTED = {
    "t5": "T5ForConditionalGeneration",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}

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


# ----------------------------------------------------------------------------- configs


def _token_ids(value):
    """A config.json token id, or a list of them (Llama 3's EOS) as a hashable tuple."""
    return tuple(value) if isinstance(value, list) else value


def _hf_fields(config: ModelConfig, fields: str) -> dict:
    """config.json entries for the space-separated ``fields``; tuples become lists."""
    values = {k: getattr(config, k) for k in fields.split()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def config_from_hf(hf: dict, where: str = "config.json", **overrides) -> ModelConfig:
    """kid's config for a Hugging Face config.json dict; unsupported models raise."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(
            f"{where}: unsupported architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {sorted(SUPPORTED)}"
        )
    if model_type == "t5":
        return T5Config(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            num_heads=hf["num_heads"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            dropout_rate=hf.get("dropout_rate", 0.1),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward_proj=hf.get("feed_forward_proj", "relu"),
            tie_word_embeddings=hf.get("tie_word_embeddings", True) is not False,
            # transformers 5 writes the rescale flag; older configs imply it by tying.
            scale_decoder_outputs=hf.get(
                "scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False
            ),
            pad_token_id=hf.get("pad_token_id", 0),
            eos_token_id=_token_ids(hf.get("eos_token_id", 1)),
            decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
            **overrides,
        )
    if hf.get("use_sliding_window"):
        raise ValueError(f"{where}: use_sliding_window=true is not supported")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{where}: rope type {rope_type!r} is not supported (only default)")
    heads = hf["num_attention_heads"]
    attention_bias = bool(hf.get("attention_bias", False))
    return DecoderConfig(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        hidden_act=hf.get("hidden_act", "silu"),
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=model_type == "llama" and attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=_token_ids(hf.get("eos_token_id")),
        pad_token_id=hf.get("pad_token_id"),
        **overrides,
    )


def config_to_hf(config: ModelConfig) -> dict:
    """A config.json dict transformers builds the same architecture from."""
    dtype = jnp.dtype(config.param_dtype).name
    if isinstance(config, T5Config):
        fields = (
            "vocab_size d_model d_kv d_ff num_layers num_decoder_layers num_heads "
            "relative_attention_num_buckets relative_attention_max_distance dropout_rate "
            "layer_norm_epsilon feed_forward_proj tie_word_embeddings "
            "scale_decoder_outputs pad_token_id eos_token_id decoder_start_token_id"
        )
        return {
            "architectures": [SUPPORTED["t5"]],
            "model_type": "t5",
            "is_encoder_decoder": True,
            "dtype": dtype,
            **_hf_fields(config, fields),
        }
    family = config.model_type
    if family == "qwen2" and (not config.qkv_bias or config.o_bias or config.mlp_bias):
        raise ValueError(
            "a qwen2 config has q/k/v bias only (qkv_bias=True, o_bias=False, mlp_bias=False)"
        )
    if family == "llama" and config.qkv_bias != config.o_bias:
        raise ValueError("llama's attention_bias covers q/k/v and o: qkv_bias must equal o_bias")
    fields = (
        "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
        "num_key_value_heads head_dim rms_norm_eps max_position_embeddings hidden_act "
        "tie_word_embeddings attention_dropout bos_token_id eos_token_id pad_token_id "
        "mlp_bias"
    )
    out = {
        "architectures": [SUPPORTED[family]],
        "model_type": family,
        "dtype": dtype,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        **_hf_fields(config, fields),
    }
    if family == "llama":
        out["attention_bias"] = config.o_bias
    else:
        del out["mlp_bias"]
    return out


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
        raise ValueError(
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
      ValueError / KeyError naming the tensor or config field: unsupported architecture,
      missing or unexpected tensors, shape mismatches.
    """
    directory = pathlib.Path(path)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"no config.json in {directory}")
    hf_config = json.loads(config_path.read_text())
    config = config_from_hf(
        hf_config, str(config_path), param_dtype=param_dtype, scan_layers=scan_layers
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
        raise ValueError(
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
