"""Decoder-only LM of the Llama / Qwen2 family (TinyLlama, Llama 2, Qwen1.5/2/2.5).

RMSNorm, rotary positions (theta from the config), SwiGLU MLP, grouped-/multi-query attention,
optional q/k/v bias (Qwen2) and tied embeddings, matching Hugging Face's implementation.

Batch layout: prompts are left-padded and ``positions = cumsum(attention_mask) - 1``, so a
padded row computes exactly what the unpadded row would (padding is masked out of attention).

Full forward (CONTRACT 4)::

    logits = module.apply({"params": p}, input_ids, attention_mask)      # [B, T, V]

Incremental decoding with an explicit cache (``kid.models.cache.DecodeCache``), traceable
inside ``jax.jit`` / ``lax.scan`` / ``lax.while_loop``::

    logits, cache = module.apply({"params": p}, prompt_ids, prompt_mask,
                                 max_new_tokens=n, method="prefill")
    # logits [B, V]: next-token logits after the prompt; the cache holds the prompt and has
    # room for n more tokens.
    logits, cache = module.apply({"params": p}, tokens, cache, method="decode")
    # tokens [B, T] (usually T = 1) appended after the cached ones; logits [B, T, V].

``decode`` also takes ``token_mask`` [B, T] (False for padding inside the chunk); the RoPE
position of a token is the number of real tokens before it, as in the full forward pass.
With LoRA add ``"lora": adapters`` to the variables; with dropout pass
``deterministic=False`` and a ``"dropout"`` rng.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid.models import cache as cache_lib
from kid.models.configs import DecoderConfig
from kid.models.layers import (
    Dense,
    Embed,
    RMSNorm,
    activation,
    attention,
    build_mask,
    constrain_embed,
    constrain_heads,
    constrain_mlp,
    head_accumulation_dtype,
    output_logits,
    read_layer,
    rotary,
    write_cache,
    write_layer,
)
from kid.models.stack import apply_layers, make_layers


def _dense(cfg: DecoderConfig, name: str, features, axes, use_bias: bool = False) -> Dense:
    lora = cfg.lora if cfg.lora is not None and name in cfg.lora.targets else None
    return Dense(
        features,
        axes,
        use_bias=use_bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        lora=lora,
        name=name,
    )


class Attention(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, x, kv_cache, layer, positions, mask, index, deterministic: bool):
        """kv_cache: None, or the (keys, values) stacked over layers; this is layer ``layer``."""
        cfg = self.config
        heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = _dense(cfg, "q_proj", (heads, head_dim), ("embed", "heads", "head_dim"), cfg.qkv_bias)(
            x, deterministic
        )
        k = _dense(
            cfg, "k_proj", (kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias
        )(x, deterministic)
        v = _dense(
            cfg, "v_proj", (kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias
        )(x, deterministic)
        q = constrain_heads(rotary(q, positions, cfg.rope_theta))
        k = rotary(k, positions, cfg.rope_theta)
        if kv_cache is not None:
            kv_cache = (
                write_layer(kv_cache[0], k, layer, index),
                write_layer(kv_cache[1], v, layer, index),
            )
            k, v = read_layer(kv_cache[0], layer), read_layer(kv_cache[1], layer)
        dropout_rng = None
        if not deterministic and cfg.attention_dropout > 0.0:
            dropout_rng = self.make_rng("dropout")
        out = attention(
            q,
            k,
            v,
            mask,
            scale=head_dim**-0.5,
            dropout_rate=cfg.attention_dropout,
            dropout_rng=dropout_rng,
        )
        out = _dense(cfg, "o_proj", (cfg.hidden_size,), ("heads", "head_dim", "embed"), cfg.o_bias)(
            constrain_heads(out), deterministic
        )
        return out, kv_cache


class Mlp(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        up_axes = ("embed", "mlp")
        gate = _dense(cfg, "gate_proj", (cfg.intermediate_size,), up_axes, cfg.mlp_bias)
        up = _dense(cfg, "up_proj", (cfg.intermediate_size,), up_axes, cfg.mlp_bias)
        h = activation(cfg.hidden_act)(gate(x, deterministic)) * up(x, deterministic)
        h = constrain_mlp(h)
        down = _dense(cfg, "down_proj", (cfg.hidden_size,), ("mlp", "embed"), cfg.mlp_bias)
        return down(h, deterministic)


class DecoderLayer(nn.Module):
    config: DecoderConfig

    @nn.compact
    def __call__(self, carry, layer, positions, mask, index, deterministic: bool):
        """A ``kid.models.stack`` layer: carry is (x, kv_cache)."""
        x, kv_cache = carry
        cfg = self.config
        norm = functools.partial(RMSNorm, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
        h, kv_cache = Attention(cfg, name="self_attn")(
            norm(name="input_layernorm")(x), kv_cache, layer, positions, mask, index, deterministic
        )
        x = x + h
        x = x + Mlp(cfg, name="mlp")(norm(name="post_attention_layernorm")(x), deterministic)
        return (constrain_embed(x), kv_cache), None


class DecoderLM(nn.Module):
    """Llama / Qwen2 causal LM. See the module docstring for the calling conventions."""

    config: DecoderConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = Embed(
            cfg.vocab_size, cfg.hidden_size, cfg.dtype, cfg.param_dtype, init_scale=0.02
        )
        self.layers = make_layers(DecoderLayer, cfg, cfg.num_hidden_layers, num_args=3)
        self.norm = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = Dense(
                (cfg.vocab_size,),
                ("embed", "vocab"),
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                accumulation_dtype=head_accumulation_dtype(cfg.dtype, cfg.logits_dtype),
            )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        decoder_input_ids: jax.Array | None = None,
        decoder_attention_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Logits [B, T, V] for left-padded ``input_ids`` [B, T] (mask 1 = real token)."""
        if decoder_input_ids is not None or decoder_attention_mask is not None:
            raise ValueError(
                "decoder-only models take no decoder_input_ids / decoder_attention_mask"
            )
        return self.output_head(self.hidden_states(input_ids, attention_mask, deterministic))

    def hidden_states(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Final hidden states [B, T, D] (after the last norm), before the output head.

        ``kid.models.forward`` slices them to the target columns before ``output_head``, so
        the vocabulary projection never runs over prompt positions.
        """
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        token_mask = attention_mask.astype(bool)
        positions = jnp.cumsum(token_mask, axis=1, dtype=jnp.int32) - 1
        slots = jnp.arange(input_ids.shape[1])
        mask = build_mask(token_mask, slots, causal=True)
        x, _ = self._layers(input_ids, None, positions, mask, 0, deterministic)
        return x

    def prefill(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        max_new_tokens: int,
        *,
        cache_dtype=None,
    ) -> tuple[jax.Array, cache_lib.DecodeCache]:
        """Run a left-padded prompt into a fresh cache with room for ``max_new_tokens`` more.

        Returns (next-token logits [B, V] after the prompt, cache).
        """
        cfg = self.config
        batch, length = input_ids.shape
        cache = cache_lib.empty(
            batch,
            length + max_new_tokens,
            cfg.num_hidden_layers,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cache_dtype or cfg.dtype,
        )
        x, cache = self._extend(input_ids, cache, attention_mask)
        return self.output_head(x[:, -1]), cache

    def decode(
        self,
        tokens: jax.Array,
        cache: cache_lib.DecodeCache,
        token_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, cache_lib.DecodeCache]:
        """Append ``tokens`` [B, T] to the cache; returns (logits [B, T, V], cache)."""
        x, cache = self._extend(tokens, cache, token_mask, deterministic)
        return self.output_head(x), cache

    def _extend(self, tokens, cache, token_mask=None, deterministic=True):
        """Hidden states of ``tokens`` placed after the cached ones, and the updated cache."""
        if token_mask is None:
            token_mask = jnp.ones(tokens.shape, bool)
        token_mask = token_mask.astype(bool)
        positions = cache.lengths[:, None] + jnp.cumsum(token_mask, axis=1, dtype=jnp.int32) - 1
        key_mask = write_cache(cache.mask, token_mask, cache.index)
        slots = cache.index + jnp.arange(tokens.shape[1])
        mask = build_mask(key_mask, slots, causal=True)
        x, (keys, values) = self._layers(
            tokens, (cache.keys, cache.values), positions, mask, cache.index, deterministic
        )
        cache = cache.replace(
            keys=keys, values=values, mask=key_mask, index=cache.index + tokens.shape[1]
        )
        return x, cache

    def _layers(self, ids, kv_cache, positions, mask, index, deterministic):
        x = constrain_embed(self.embed_tokens(ids))
        x, kv_cache = apply_layers(self.layers, x, kv_cache, positions, mask, index, deterministic)
        return self.norm(x), kv_cache

    def output_head(self, x: jax.Array) -> jax.Array:
        """Logits [..., V] of hidden states [..., D], accumulated in the logits dtype."""
        cfg = self.config
        if cfg.tie_word_embeddings:
            logits = self.embed_tokens.attend(
                x, head_accumulation_dtype(cfg.dtype, cfg.logits_dtype)
            )
        else:
            logits = self.lm_head(x)
        return output_logits(logits, cfg.logits_dtype)
