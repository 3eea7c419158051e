"""Hugging Face config.json <-> kid's config dataclasses, validated field by field.

A config.json is user input (a download, a hand edit), so every field kid reads is checked
here: a bad value fails with the file and the field named instead of deep inside JAX. What
transformers 5 writes for the supported architectures is accepted: ``rope_parameters`` or
the older ``rope_theta`` / ``rope_scaling``, ``null`` for any optional field (read as
absent), a list of EOS ids; fields kid does not use (``dtype`` / ``torch_dtype``,
``layer_types``, ``use_cache``...) are ignored.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import jax.numpy as jnp

from kid.models.configs import DecoderConfig, ModelConfig, T5Config
from kid.models.layers import ACTIVATIONS
from kid.models.safetensors_io import CheckpointError

SUPPORTED = {
    "t5": "T5ForConditionalGeneration",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}

_REQUIRED = object()  # Default of a field config.json must set.


class _Fields:
    """Typed reads of one JSON object; every error names the file and the field."""

    def __init__(self, values: dict, where: str, prefix: str = ""):
        self.values, self.where, self.prefix = values, where, prefix

    def error(self, key: str, expected: str) -> CheckpointError:
        got = reprlib.repr(self.values.get(key))
        return CheckpointError(f"{self.where}: {self.prefix}{key} must be {expected}, got {got}")

    def _get(self, key: str, default: Any) -> Any:
        value = self.values.get(key)
        if value is None and default is _REQUIRED:
            raise CheckpointError(f"{self.where}: missing required field {self.prefix}{key}")
        return default if value is None else value

    def size(self, key: str, default: Any = _REQUIRED) -> int:
        """A positive integer (a dimension, a count of heads or layers)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(key, "a positive integer")
        return value

    def real(self, key: str, default: float, *, positive: bool) -> float:
        """A finite number: positive (an epsilon, rope theta) or else in [0, 1) (dropout)."""
        value = self._get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > 0 if positive else 0 <= value < 1)
        if not ok:
            raise self.error(key, "a positive number" if positive else "a number in [0, 1)")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def string(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error(key, "a string")
        return value

    def token_id(
        self, key: str, default: int | None, *, several: bool = False
    ) -> int | tuple[int, ...] | None:
        """A token id, or (``several``) a non-empty list of them as a hashable tuple."""
        value = self._get(key, default)
        if several and isinstance(value, list) and value:
            if all(_is_int(v) for v in value):
                return tuple(value)
        elif value is None or _is_int(value):
            return value
        raise self.error(key, "a token id" + (" or a list of token ids" if several else ""))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_from_hf(hf: dict, where: str = "config.json", **overrides) -> ModelConfig:
    """kid's config for a Hugging Face config.json dict; unsupported models and invalid
    fields raise ``CheckpointError`` naming ``where`` and the field."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where}: must be a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in SUPPORTED:
        raise CheckpointError(
            f"{where}: unsupported architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {sorted(SUPPORTED)}"
        )
    fields = _Fields(hf, where)
    if model_type == "t5":
        return _t5_config(fields, overrides)
    return _decoder_config(fields, model_type, overrides)


def _t5_config(f: _Fields, overrides: dict) -> T5Config:
    tied = f.flag("tie_word_embeddings", True)
    pad = f.token_id("pad_token_id", 0)
    layers = f.size("num_layers")
    config = T5Config(
        vocab_size=f.size("vocab_size"),
        d_model=f.size("d_model"),
        d_kv=f.size("d_kv"),
        d_ff=f.size("d_ff"),
        num_layers=layers,
        num_decoder_layers=f.size("num_decoder_layers", layers),
        num_heads=f.size("num_heads"),
        relative_attention_num_buckets=f.size("relative_attention_num_buckets", 32),
        relative_attention_max_distance=f.size("relative_attention_max_distance", 128),
        dropout_rate=f.real("dropout_rate", 0.1, positive=False),
        layer_norm_epsilon=f.real("layer_norm_epsilon", 1e-6, positive=True),
        feed_forward_proj=f.string("feed_forward_proj", "relu"),
        tie_word_embeddings=tied,
        # transformers 5 writes the rescale flag; older configs imply it by tying.
        scale_decoder_outputs=f.flag("scale_decoder_outputs", tied),
        pad_token_id=pad,
        eos_token_id=f.token_id("eos_token_id", 1, several=True),
        decoder_start_token_id=f.token_id("decoder_start_token_id", pad),
        **overrides,
    )
    # As transformers: "ACT" or "gated-ACT", with an activation kid implements.
    plain = "-" not in config.feed_forward_proj
    if not (plain or config.is_gated) or config.activation not in ACTIVATIONS:
        raise f.error("feed_forward_proj", f"'ACT' or 'gated-ACT', ACT in {sorted(ACTIVATIONS)}")
    return config


def _rope_theta(f: _Fields) -> float:
    """Theta of default rope from ``rope_parameters`` (transformers 5) or ``rope_scaling``
    plus a top-level ``rope_theta`` (older configs); other rope types raise."""
    key = "rope_parameters" if f.values.get("rope_parameters") is not None else "rope_scaling"
    rope = f.values.get(key)
    rope = {} if rope is None else rope
    if not isinstance(rope, dict):
        raise f.error(key, "an object or null")
    nested = _Fields(rope, f.where, prefix=f"{key}.")
    rope_type = nested.string("rope_type", nested.string("type", "default"))
    if rope_type != "default":
        raise CheckpointError(
            f"{f.where}: {key}.rope_type {rope_type!r} is not supported (only default)"
        )
    return nested.real("rope_theta", f.real("rope_theta", 10000.0, positive=True), positive=True)


def _decoder_config(f: _Fields, model_type: str, overrides: dict) -> DecoderConfig:
    if f.flag("use_sliding_window", False):
        raise CheckpointError(f"{f.where}: use_sliding_window=true is not supported")
    hidden = f.size("hidden_size")
    heads = f.size("num_attention_heads")
    kv_heads = f.size("num_key_value_heads", heads)
    if heads % kv_heads:
        raise f.error("num_key_value_heads", f"a divisor of num_attention_heads={heads}")
    if f.values.get("head_dim") is None and hidden < heads:
        raise CheckpointError(
            f"{f.where}: head_dim is not set and hidden_size={hidden} // "
            f"num_attention_heads={heads} is 0"
        )
    attention_bias = f.flag("attention_bias", False)
    hidden_act = f.string("hidden_act", "silu")
    if hidden_act not in ACTIVATIONS:
        raise f.error("hidden_act", f"one of {sorted(ACTIVATIONS)}")
    return DecoderConfig(
        model_type=model_type,
        vocab_size=f.size("vocab_size"),
        hidden_size=hidden,
        intermediate_size=f.size("intermediate_size"),
        num_hidden_layers=f.size("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=f.size("head_dim", hidden // heads),
        rms_norm_eps=f.real("rms_norm_eps", 1e-6, positive=True),
        rope_theta=_rope_theta(f),
        max_position_embeddings=f.size("max_position_embeddings", 2048),
        hidden_act=hidden_act,
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=model_type == "llama" and attention_bias,
        mlp_bias=f.flag("mlp_bias", False),
        tie_word_embeddings=f.flag("tie_word_embeddings", False),
        attention_dropout=f.real("attention_dropout", 0.0, positive=False),
        bos_token_id=f.token_id("bos_token_id", None),
        eos_token_id=f.token_id("eos_token_id", None, several=True),
        pad_token_id=f.token_id("pad_token_id", None),
        **overrides,
    )


def _hf_fields(config: ModelConfig, fields: str) -> dict:
    """config.json entries for the space-separated ``fields``; tuples become lists."""
    values = {k: getattr(config, k) for k in fields.split()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


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
