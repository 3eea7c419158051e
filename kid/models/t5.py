"""T5 encoder-decoder: v1.0 (ReLU, tied embeddings) and v1.1 / Flan / CodeT5 (gated-GELU).

Matches Hugging Face's T5ForConditionalGeneration: scale-only RMS LayerNorm, unscaled
attention logits, relative position buckets (bidirectional in the encoder, causal in the
decoder) shared by all layers of a stack, and, for v1.0, logits from the tied embedding with
the d_model**-0.5 rescale.

Full forward (CONTRACT 4)::

    logits = module.apply({"params": p}, input_ids, attention_mask,
                          decoder_input_ids, decoder_attention_mask)   # [B, T_dec, V]

``decoder_input_ids`` are already shifted right (they start with
``config.decoder_start_token_id``).

Incremental decoding with an explicit cache (``kid.models.cache.DecodeCache``), traceable
inside ``jax.jit`` / ``lax.scan`` / ``lax.while_loop``::

    logits, cache = module.apply({"params": p}, input_ids, attention_mask,
                                 max_new_tokens=n, method="prefill")
    # Encodes once, stores every layer's cross-attention keys/values in the cache, runs the
    # decoder start token: logits [B, V] are the first generated token's logits. The cache
    # has room for n more decoder tokens.
    logits, cache = module.apply({"params": p}, tokens, cache, method="decode")
    # tokens [B, T] appended after the cached decoder tokens; logits [B, T, V].

``encode`` returns the encoder output [B, S, d_model] alone.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid.models import cache as cache_lib
from kid.models.configs import T5Config
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
    write_cache,
    write_layer,
)
from kid.models.stack import apply_layers, make_layers


def relative_position_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucket of ``key_position - query_position``: exact for small distances,
    logarithmic up to ``max_distance``, and (bidirectional) separate buckets for keys after
    the query."""
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    log_ratio = jnp.log(safe / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """[1, heads, q_len, kv_len] float32 bias from [q_len] and [kv_len] positions."""
        cfg = self.config
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("relpos_buckets", "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            cfg.param_dtype,
        )
        buckets = relative_position_bucket(
            key_positions[None, :] - query_positions[:, None],
            self.bidirectional,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )
        bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [q_len, kv_len, heads]
        return jnp.transpose(bias, (2, 0, 1))[None]


def _dense(cfg: T5Config, target: str, features, axes, **kw) -> Dense:
    """A projection; ``target`` is its LoRA target name."""
    lora = cfg.lora if cfg.lora is not None and target in cfg.lora.targets else None
    return Dense(features, axes, dtype=cfg.dtype, param_dtype=cfg.param_dtype, lora=lora, **kw)


class T5Attention(nn.Module):
    """Multi-head attention without logit scaling (folded into the query init)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        heads = (cfg.num_heads, cfg.d_kv)
        head_axes = ("embed", "heads", "head_dim")
        q_init = nn.initializers.variance_scaling(1.0 / cfg.d_kv, "fan_in", "normal")
        self.q = _dense(cfg, "q", heads, head_axes, kernel_init=q_init)
        self.k = _dense(cfg, "k", heads, head_axes)
        self.v = _dense(cfg, "v", heads, head_axes)
        self.o = _dense(cfg, "o", (cfg.d_model,), ("heads", "head_dim", "embed"))

    def key_values(self, x: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
        return self.k(x, deterministic), self.v(x, deterministic)

    def __call__(self, x, keys, values, mask, bias, deterministic: bool) -> jax.Array:
        cfg = self.config
        q = constrain_heads(self.q(x, deterministic))
        dropout_rng = None
        if not deterministic and cfg.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        out = attention(
            q, keys, values, mask, bias=bias, dropout_rate=cfg.dropout_rate, dropout_rng=dropout_rng
        )
        return self.o(constrain_heads(out), deterministic)


class T5Mlp(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        act = activation(cfg.activation)
        up = functools.partial(_dense, cfg, features=(cfg.d_ff,), axes=("embed", "mlp"))
        if cfg.is_gated:
            h = act(up("wi_0", name="wi_0")(x, deterministic))
            h = h * up("wi_1", name="wi_1")(x, deterministic)
        else:
            h = act(up("wi", name="wi")(x, deterministic))
        h = constrain_mlp(h)
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return _dense(cfg, "wo", (cfg.d_model,), ("mlp", "embed"), name="wo")(h, deterministic)


def _norm(cfg: T5Config, name: str) -> RMSNorm:
    return RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name=name)


class T5EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, carry, layer, mask, bias, deterministic: bool):
        """A ``kid.models.stack`` layer: carry is (x, None), the encoder has no cache."""
        del layer
        x, cache = carry
        cfg = self.config
        dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=deterministic)
        attn = T5Attention(cfg, name="self_attn")
        h = _norm(cfg, "self_attn_norm")(x)
        x = x + dropout(attn(h, *attn.key_values(h, deterministic), mask, bias, deterministic))
        x = x + dropout(T5Mlp(cfg, name="mlp")(_norm(cfg, "mlp_norm")(x), deterministic))
        return (constrain_embed(x), cache), None


class T5DecoderLayer(nn.Module):
    """Self-attention, cross-attention, MLP.

    A ``kid.models.stack`` layer: carry is (x, cache), cache None or (keys, values,
    cross_keys, cross_values) stacked over layers (this is layer ``layer``). When ``encoded``
    is given the cross keys/values are computed from it (and stored in the cache); otherwise
    they are read from the cache, which then leaves them untouched.
    """

    config: T5Config

    @nn.compact
    def __call__(
        self, carry, layer, encoded, self_mask, cross_mask, bias, index, deterministic: bool
    ):
        x, cache = carry
        cfg = self.config
        dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=deterministic)
        self_attn = T5Attention(cfg, name="self_attn")
        h = _norm(cfg, "self_attn_norm")(x)
        keys, values = self_attn.key_values(h, deterministic)
        if cache is not None:
            self_keys = write_layer(cache[0], keys, layer, index)
            self_values = write_layer(cache[1], values, layer, index)
            cache = (self_keys, self_values, *cache[2:])
            keys, values = read_layer(self_keys, layer), read_layer(self_values, layer)
        x = x + dropout(self_attn(h, keys, values, self_mask, bias, deterministic))

        cross_attn = T5Attention(cfg, name="cross_attn")
        if encoded is not None:
            cross_keys, cross_values = cross_attn.key_values(encoded, deterministic)
            if cache is not None:
                cache = (
                    *cache[:2],
                    write_layer(cache[2], cross_keys, layer, 0),
                    write_layer(cache[3], cross_values, layer, 0),
                )
        else:
            cross_keys, cross_values = read_layer(cache[2], layer), read_layer(cache[3], layer)
        h = _norm(cfg, "cross_attn_norm")(x)
        x = x + dropout(cross_attn(h, cross_keys, cross_values, cross_mask, None, deterministic))

        x = x + dropout(T5Mlp(cfg, name="mlp")(_norm(cfg, "mlp_norm")(x), deterministic))
        return (constrain_embed(x), cache), None


class T5Encoder(nn.Module):
    config: T5Config

    def setup(self):
        cfg = self.config
        self.relative_attention_bias = RelativePositionBias(cfg, bidirectional=True)
        self.layers = make_layers(T5EncoderLayer, cfg, cfg.num_layers, num_args=2)
        self.final_layer_norm = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, x, attention_mask, deterministic: bool):
        positions = jnp.arange(x.shape[1])
        bias = self.relative_attention_bias(positions, positions)
        mask = build_mask(attention_mask, positions, causal=False)
        x = self.dropout(x, deterministic=deterministic)
        x, _ = apply_layers(self.layers, x, None, mask, bias, deterministic)
        return self.dropout(self.final_layer_norm(x), deterministic=deterministic)


class T5Decoder(nn.Module):
    config: T5Config

    def setup(self):
        cfg = self.config
        self.relative_attention_bias = RelativePositionBias(cfg, bidirectional=False)
        self.layers = make_layers(T5DecoderLayer, cfg, cfg.num_decoder_layers, num_args=5)
        self.final_layer_norm = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(
        self, x, key_mask, query_slots, encoded, encoder_mask, cache, index, deterministic: bool
    ):
        """x: [B, T, D] embedded decoder tokens at cache slots ``query_slots`` [T];
        key_mask: [B, S] valid self-attention keys (S = T without a cache)."""
        bias = self.relative_attention_bias(query_slots, jnp.arange(key_mask.shape[1]))
        self_mask = build_mask(key_mask, query_slots, causal=True)
        cross_mask = build_mask(encoder_mask, query_slots, causal=False)
        x = self.dropout(x, deterministic=deterministic)
        x, cache = apply_layers(
            self.layers, x, cache, encoded, self_mask, cross_mask, bias, index, deterministic
        )
        return self.dropout(self.final_layer_norm(x), deterministic=deterministic), cache


class T5(nn.Module):
    """T5ForConditionalGeneration. See the module docstring for the calling conventions."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared = Embed(cfg.vocab_size, cfg.d_model, cfg.dtype, cfg.param_dtype)
        self.encoder = T5Encoder(cfg)
        self.decoder = T5Decoder(cfg)
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
        """Logits [B, T_dec, V] of the decoder given encoder inputs [B, S]."""
        return self.output_head(
            self.hidden_states(
                input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, deterministic
            )
        )

    def hidden_states(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None,
        decoder_input_ids: jax.Array | None,
        decoder_attention_mask: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Final decoder hidden states [B, T_dec, d_model], before the output head."""
        if decoder_input_ids is None:
            raise ValueError(
                "T5 needs decoder_input_ids (shifted right, starting with "
                f"decoder_start_token_id={self.config.decoder_start_token_id})"
            )
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if decoder_attention_mask is None:
            decoder_attention_mask = jnp.ones_like(decoder_input_ids)
        encoder_mask = attention_mask.astype(bool)
        encoded = self.encode(input_ids, encoder_mask, deterministic=deterministic)
        x, _ = self.decoder(
            self._embed(decoder_input_ids),
            decoder_attention_mask.astype(bool),
            jnp.arange(decoder_input_ids.shape[1]),
            encoded,
            encoder_mask,
            None,
            0,
            deterministic,
        )
        return x

    def encode(
        self, input_ids: jax.Array, attention_mask: jax.Array, *, deterministic: bool = True
    ) -> jax.Array:
        """Encoder output [B, S, d_model]."""
        return self.encoder(self._embed(input_ids), attention_mask.astype(bool), deterministic)

    def prefill(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        max_new_tokens: int,
        *,
        cache_dtype=None,
    ) -> tuple[jax.Array, cache_lib.DecodeCache]:
        """Encode, fill the cross-attention cache, run the decoder start token.

        Returns (logits [B, V] of the first generated token, cache with room for
        ``max_new_tokens`` more decoder tokens).
        """
        cfg = self.config
        batch, enc_len = input_ids.shape
        dtype = cache_dtype or cfg.dtype
        encoder_mask = attention_mask.astype(bool)
        encoded = self.encode(input_ids, encoder_mask)
        cross_shape = (cfg.num_decoder_layers, batch, enc_len, cfg.num_heads, cfg.d_kv)
        cache = cache_lib.empty(
            batch, 1 + max_new_tokens, cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv, dtype
        )
        cache = cache.replace(
            cross_keys=jnp.zeros(cross_shape, dtype),
            cross_values=jnp.zeros(cross_shape, dtype),
            encoder_mask=encoder_mask,
        )
        start = jnp.full((batch, 1), cfg.decoder_start_token_id, jnp.int32)
        logits, cache = self._extend(start, cache, encoded=encoded)
        return logits[:, 0], cache

    def decode(
        self,
        tokens: jax.Array,
        cache: cache_lib.DecodeCache,
        token_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, cache_lib.DecodeCache]:
        """Append decoder ``tokens`` [B, T]; returns (logits [B, T, V], cache)."""
        return self._extend(tokens, cache, token_mask, deterministic=deterministic)

    def _extend(self, tokens, cache, token_mask=None, *, encoded=None, deterministic=True):
        if token_mask is None:
            token_mask = jnp.ones(tokens.shape, bool)
        key_mask = write_cache(cache.mask, token_mask.astype(bool), cache.index)
        slots = cache.index + jnp.arange(tokens.shape[1])
        layer_cache = (cache.keys, cache.values, cache.cross_keys, cache.cross_values)
        x, layer_cache = self.decoder(
            self._embed(tokens),
            key_mask,
            slots,
            encoded,
            cache.encoder_mask,
            layer_cache,
            cache.index,
            deterministic,
        )
        keys, values, cross_keys, cross_values = layer_cache
        cache = cache.replace(
            keys=keys,
            values=values,
            cross_keys=cross_keys,
            cross_values=cross_values,
            mask=key_mask,
            index=cache.index + tokens.shape[1],
        )
        return self.output_head(x), cache

    def _embed(self, ids: jax.Array) -> jax.Array:
        return constrain_embed(self.shared(ids))

    def output_head(self, x: jax.Array) -> jax.Array:
        """Logits [..., V] of decoder hidden states [..., d_model], accumulated in the logits
        dtype."""
        cfg = self.config
        if cfg.scale_decoder_outputs:
            x = x * (cfg.d_model**-0.5)
        accumulation = head_accumulation_dtype(cfg.dtype, cfg.logits_dtype)
        if cfg.tie_word_embeddings:
            logits = self.shared.attend(x, accumulation)
        else:
            logits = self.lm_head(x)
        return output_logits(logits, cfg.logits_dtype)
