"""Model configurations: frozen dataclasses the modules are built from, and named presets.

A config is converted once (from a checkpoint's config.json or a preset) into one of these
dataclasses and never changes inside the model; variants are derived with
``dataclasses.replace`` (e.g. ``scan_layers=True``, ``dtype=jnp.bfloat16``). The tiny presets
are for tests and the embedded benchmark; the real ones record published checkpoints'
shapes (their weights are loaded with ``kid.models.load_hf``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from kid.models.lora import LoRAConfig


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 v1.0 (ReLU, tied embeddings, logits rescaled by d_model**-0.5) and v1.1 / Flan
    (gated-GELU, untied head, no rescale)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" | "gated-gelu" | "gated-silu" | ...
    tie_word_embeddings: bool = True  # lm_head shares the token embedding
    scale_decoder_outputs: bool = True  # multiply the final hidden state by d_model**-0.5
    pad_token_id: int = 0
    eos_token_id: int | tuple[int, ...] = 1  # several: any of them ends a sequence
    decoder_start_token_id: int = 0
    # Numerics and layout.
    dtype: Any = jnp.float32  # computation
    param_dtype: Any = jnp.float32
    logits_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat: bool = False
    lora: LoRAConfig | None = None

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """Activation name; Hugging Face maps ``gated-gelu`` to the tanh approximation."""
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Llama / Qwen2 family decoder-only LM."""

    model_type: str = "llama"  # "llama" | "qwen2": the config.json / architecture family
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    qkv_bias: bool = False  # Qwen2: bias on q/k/v projections
    o_bias: bool = False  # Llama attention_bias: bias on q/k/v and o
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    attention_dropout: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2  # a tuple: any of them
    pad_token_id: int | None = None
    # Numerics and layout.
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    logits_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat: bool = False
    lora: LoRAConfig | None = None


ModelConfig = T5Config | DecoderConfig

_T5_V11 = dict(
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    scale_decoder_outputs=False,
    dropout_rate=0.0,
)
_QWEN2 = dict(
    model_type="qwen2",
    vocab_size=151936,
    rms_norm_eps=1e-6,
    rope_theta=1e6,
    qkv_bias=True,
    tie_word_embeddings=True,
    bos_token_id=151643,
    eos_token_id=151643,
    max_position_embeddings=32768,
)

CONFIGS: dict[str, ModelConfig] = {
    # Tiny presets: tests, the embedded benchmark, decoding benchmarks.
    "t5-tiny": T5Config(
        vocab_size=128,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
    ),
    "t5v1_1-tiny": T5Config(
        vocab_size=128,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=4,
        **_T5_V11,
    ),
    "llama-tiny": DecoderConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
    ),
    "qwen2-tiny": DecoderConfig(
        **{**_QWEN2, "vocab_size": 128, "bos_token_id": 1, "eos_token_id": 2},
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    ),
    # Published checkpoints.
    "t5-small": T5Config(),
    "t5-base": T5Config(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
    "flan-t5-small": T5Config(
        d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, **_T5_V11
    ),
    "flan-t5-base": T5Config(
        d_model=768, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12, **_T5_V11
    ),
    "tinyllama-1.1b": DecoderConfig(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=2048,
    ),
    "llama2-7b": DecoderConfig(),
    "qwen2.5-0.5b": DecoderConfig(
        **_QWEN2,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
    ),
    "qwen2.5-1.5b": DecoderConfig(
        **_QWEN2,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,
    ),
}


def get_config(name: str, **overrides) -> ModelConfig:
    """A named preset, optionally with fields replaced (``get_config("qwen2-tiny",
    scan_layers=True)``)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)
