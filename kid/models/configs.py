"""Model configurations: frozen dataclasses the modules are built from, and named presets.

A config is converted once (from a checkpoint's config.json or a preset) into one of these
dataclasses and never changes inside the model; variants are derived with
``dataclasses.replace`` (e.g. ``scan_layers=True``, ``dtype=jnp.bfloat16``). The tiny presets
are for tests and the embedded benchmark; the real ones record published checkpoints'
shapes (their weights are loaded with ``kid.models.load_hf``).

Head widths default to the model width over the heads (``d_kv`` / ``head_dim`` None), resolved
at construction: ``dataclasses.replace`` keeps a resolved width, so pass ``d_kv=None`` (or
``head_dim=None``) with a new ``d_model`` / ``num_heads`` to derive it again. The ``*-synth-*``
presets are sized for the embedded benchmark; their vocabulary and special ids are those of its
byte-level BPE until ``for_tokenizer`` sets them from the tokenizer actually used.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax.numpy as jnp

from kid.models.lora import LoRAConfig


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 v1.0 (ReLU, tied embeddings, logits rescaled by d_model**-0.5) and v1.1 / Flan
    (gated-GELU, untied head, no rescale)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int | None = None  # per-head width; None: d_model // num_heads
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

    def __post_init__(self):
        if self.d_kv is None:
            width = _head_width("T5Config", "d_model", self.d_model, "num_heads", self.num_heads)
            object.__setattr__(self, "d_kv", width)

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
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
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

    def __post_init__(self):
        if self.head_dim is None:
            width = _head_width(
                "DecoderConfig",
                "hidden_size",
                self.hidden_size,
                "num_attention_heads",
                self.num_attention_heads,
            )
            object.__setattr__(self, "head_dim", width)


ModelConfig = T5Config | DecoderConfig


def _head_width(config: str, width_name: str, width: int, heads_name: str, heads: int) -> int:
    """width // heads, refused when the heads do not split the width evenly."""
    if heads < 1 or width % heads:
        raise ValueError(
            f"{config}: {width_name} {width} is not divisible by {heads_name} {heads}; "
            "set the head width explicitly"
        )
    return width // heads


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

# Placeholders for the *-synth-* presets: kid's BPE (<pad> 0, </s> 1, no BOS, 4096 tokens).
_SYNTH_VOCAB = 4096
_SYNTH_T5_IDS = dict(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
_SYNTH_DECODER_IDS = dict(bos_token_id=None, eos_token_id=1, pad_token_id=0)

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
    # The embedded benchmark: a ~1.8M-parameter teacher and a ~4x smaller student per family
    # (with the 4096-token BPE). Vocabulary and special ids: see for_tokenizer.
    "t5-synth-teacher": T5Config(
        vocab_size=_SYNTH_VOCAB,
        d_model=128,
        d_ff=512,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=4,
        dropout_rate=0.1,
        **_SYNTH_T5_IDS,
    ),
    "t5-synth-student": T5Config(
        vocab_size=_SYNTH_VOCAB,
        d_model=64,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.1,
        **_SYNTH_T5_IDS,
    ),
    "llama-synth-teacher": DecoderConfig(
        vocab_size=_SYNTH_VOCAB,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **_SYNTH_DECODER_IDS,
    ),
    "llama-synth-student": DecoderConfig(
        vocab_size=_SYNTH_VOCAB,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **_SYNTH_DECODER_IDS,
    ),
    # Published checkpoints.
    "t5-small": T5Config(),
    "t5-base": T5Config(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
    "flan-t5-small": T5Config(
        d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, **_T5_V11
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


def _eos_ids(eos_id: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if eos_id is None:
        return ()
    return tuple(eos_id) if isinstance(eos_id, tuple | list) else (eos_id,)


def _check_id(name: str, value: int, vocab_size: int, where: str) -> None:
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integer or not 0 <= value < vocab_size:
        raise ValueError(f"{name} {value!r} is not an id below {where} {vocab_size}")


def for_tokenizer(
    config: ModelConfig,
    *,
    vocab_size: int,
    pad_id: int,
    eos_id: int | tuple[int, ...],
    bos_id: int | None = None,
    pad_to_multiple: int = 1,
) -> ModelConfig:
    """``config`` sized and labelled for a tokenizer, so the model and the batches agree.

    vocab_size is ``len(tokenizer)`` (added tokens included), rounded up to a multiple of
    ``pad_to_multiple`` (e.g. 128, for even sharding); the extra rows are never decoded
    (decoding and the losses slice logits to the tokenizer's vocabulary). T5's decoder
    starts from its pad id, as HF T5 does; T5 has no BOS (``bos_id`` must be None).
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if isinstance(pad_to_multiple, bool) or not isinstance(pad_to_multiple, int):
        raise ValueError(f"pad_to_multiple must be a positive integer, got {pad_to_multiple!r}")
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be a positive integer, got {pad_to_multiple!r}")
    eos = _eos_ids(eos_id)
    if not eos:
        raise ValueError(f"eos_id must be a token id or a non-empty tuple of them, got {eos_id!r}")
    _check_id("pad_id", pad_id, vocab_size, "vocab_size")
    for i in eos:
        _check_id("eos_id", i, vocab_size, "vocab_size")
    if bos_id is not None:
        _check_id("bos_id", bos_id, vocab_size, "vocab_size")
    eos_value = eos[0] if len(eos) == 1 else eos
    rows = math.ceil(vocab_size / pad_to_multiple) * pad_to_multiple
    if isinstance(config, T5Config):
        if bos_id is not None:
            raise ValueError(f"bos_id must be None for T5 (it has no BOS token), got {bos_id}")
        return dataclasses.replace(
            config,
            vocab_size=rows,
            pad_token_id=pad_id,
            eos_token_id=eos_value,
            decoder_start_token_id=pad_id,
        )
    return dataclasses.replace(
        config, vocab_size=rows, pad_token_id=pad_id, eos_token_id=eos_value, bos_token_id=bos_id
    )


def check_tokenizer_agrees(
    config: ModelConfig,
    *,
    vocab_size: int,
    pad_id: int,
    eos_id: int | tuple[int, ...],
    decoder_start_id: int | None = None,
) -> None:
    """Refuses a model (e.g. loaded from a checkpoint) whose ids disagree with the data's.

    The embedding needs a row per tokenizer id (``vocab_size = len(tokenizer)``); every EOS
    the data ends targets with must end the model's decoding; T5's decoder must start from
    the batches' ``decoder_start_id`` (``pipeline.BatchOptions.decoder_start_id``; ignored
    for decoder-only models, whose batches have none). The pad id is only range-checked:
    padding is masked everywhere. The ValueError names the field.
    """
    if config.vocab_size < vocab_size:
        raise ValueError(
            f"model vocab_size {config.vocab_size} (embedding rows) but data vocab_size "
            f"{vocab_size}: resize the model (kid.models.resize_vocab)"
        )
    _check_id("data pad_id", pad_id, config.vocab_size, "model vocab_size")
    model_eos = _eos_ids(config.eos_token_id)
    for i in _eos_ids(eos_id):
        if i not in model_eos:
            raise ValueError(f"model eos_token_id {config.eos_token_id} but data eos_id {eos_id}")
    if isinstance(config, T5Config) and decoder_start_id is not None:
        if decoder_start_id != config.decoder_start_token_id:
            raise ValueError(
                f"model decoder_start_token_id {config.decoder_start_token_id} but data "
                f"decoder_start_id {decoder_start_id}"
            )
