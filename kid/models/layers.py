"""Building blocks shared by the T5 and decoder-only models.

Every parameter is created with logical axis names (``nn.with_logical_partitioning``) and
every projection can carry a LoRA adapter in the ``"lora"`` collection. Kernels keep the head
structure (``[embed, heads, head_dim]``) so heads shard on the tensor axis; the Hugging Face
converters in ``kid.models.hf`` reshape to and from PyTorch's ``[out, in]`` matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid.models import lora as lora_lib
from kid.sharding import constrain

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    """Scale-only RMS normalisation (T5 LayerNorm, Llama RMSNorm), computed in float32."""

    epsilon: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return y.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding; ``attend`` reuses it as a tied output projection."""

    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    init_scale: float = 1.0

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(self.init_scale), ("vocab", "embed")
            ),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array, accumulation_dtype: Dtype | None = None) -> jax.Array:
        """Logits [..., vocab] of hidden states [..., features], accumulated in
        ``accumulation_dtype`` (fp32 logits from bf16 compute are fp32 sums, not upcasts)."""
        embedding = self.embedding.astype(self.dtype)
        return jnp.einsum("...d,vd->...v", x, embedding, preferred_element_type=accumulation_dtype)


class Dense(nn.Module):
    """``y = x . kernel (+ bias)`` contracting the last ``len(in_axes)`` dims of x.

    ``axes`` names the kernel's dims, input dims first (``("embed", "heads", "head_dim")`` for a
    query projection). With ``lora`` set the layer adds ``scale * dropout(x) . A . B`` when the
    ``"lora"`` collection holds its adapter (and creates A, B during ``init``).
    ``accumulation_dtype`` sets the matmul's output type (the output head's fp32 logits).
    """

    features: Sequence[int]
    axes: Sequence[str]
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    lora: lora_lib.LoRAConfig | None = None
    accumulation_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        features = tuple(self.features)
        n_in = len(self.axes) - len(features)
        in_shape = x.shape[x.ndim - n_in :]
        in_axes = tuple(range(n_in))
        kernel_init = nn.with_logical_partitioning(self.kernel_init, tuple(self.axes))
        kernel = self.param("kernel", kernel_init, in_shape + features, self.param_dtype)
        x = x.astype(self.dtype)
        y = _contract(x, kernel.astype(self.dtype), n_in, self.accumulation_dtype)
        if self.use_bias:
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.axes[n_in:]))
            y = y + self.param("bias", bias_init, features, self.param_dtype).astype(self.dtype)
        if self.lora is not None and (self.is_initializing() or self.has_variable("lora", "a")):
            rank_axis = ("lora_rank",)
            a_init = nn.initializers.variance_scaling(
                1 / 3, "fan_in", "uniform", in_axis=in_axes, out_axis=-1
            )
            a = self.variable(
                "lora",
                "a",
                lambda: nn.with_logical_partitioning(a_init, (*self.axes[:n_in], *rank_axis))(
                    self.make_rng("params"), (*in_shape, self.lora.rank), self.param_dtype
                ),
            ).value
            b = self.variable(
                "lora",
                "b",
                lambda: nn.with_logical_partitioning(
                    nn.initializers.zeros, (*rank_axis, *self.axes[n_in:])
                )(self.make_rng("params"), (self.lora.rank, *features), self.param_dtype),
            ).value
            h = nn.Dropout(self.lora.dropout)(x, deterministic=deterministic)
            h = _contract(h, a.astype(self.dtype), n_in)
            y = y + self.lora.scale * _contract(h, b.astype(self.dtype), 1)
        return y


def _contract(x: jax.Array, kernel: jax.Array, n: int, out_dtype: Dtype | None = None) -> jax.Array:
    """Contract the last n dims of x with the first n dims of kernel."""
    return jax.lax.dot_general(
        x,
        kernel,
        ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())),
        preferred_element_type=out_dtype,
    )


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    bias: jax.Array | None = None,
    scale: float = 1.0,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Grouped-query dot-product attention with float32 softmax.

    Args:
      q: [batch, q_len, heads, head_dim].
      k, v: [batch, kv_len, kv_heads, head_dim]; heads must be a multiple of kv_heads.
      mask: [batch, q_len, kv_len] bool, True where a query may attend.
      bias: optional [batch or 1, heads, q_len, kv_len] additive bias (T5 relative positions).
      dropout_rng: when given (and dropout_rate > 0), dropout on the attention weights.

    Returns:
      [batch, q_len, heads, head_dim]. Fully masked query rows return finite values.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.reshape(bias.shape[0], kv_heads, h // kv_heads, t, -1)
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rng is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
    return out.reshape(b, t, h, d)


def build_mask(key_mask: jax.Array, query_slots: jax.Array, causal: bool) -> jax.Array:
    """[batch, q_len, kv_len] mask from key validity [batch, kv_len] and the cache slots
    [q_len] the queries occupy (keys are at slots 0..kv_len-1)."""
    mask = key_mask[:, None, :]
    if causal:
        key_slots = jnp.arange(key_mask.shape[1])
        mask = mask & (key_slots[None, None, :] <= query_slots[None, :, None])
    return jnp.broadcast_to(mask, (key_mask.shape[0], query_slots.shape[0], key_mask.shape[1]))


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding, Hugging Face layout (rotate halves, not interleaved pairs).

    x: [batch, len, heads, head_dim]; positions: [batch, len] int.
    """
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half)))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, len, half]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def write_cache(cache: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
    """Write ``new`` [batch, len, ...] into ``cache`` [batch, max_len, ...] at slot ``index``."""
    start = (0, index) + (0,) * (cache.ndim - 2)
    return jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), start)


def write_layer(
    cache: jax.Array, new: jax.Array, layer: int | jax.Array, index: int | jax.Array
) -> jax.Array:
    """Write layer ``layer``'s ``new`` [batch, len, ...] into the stacked ``cache``
    [layers, batch, max_len, ...] at slot ``index``, updating the stack in place under jit."""
    start = (layer, 0, index) + (0,) * (cache.ndim - 3)
    return jax.lax.dynamic_update_slice(cache, new[None].astype(cache.dtype), start)


def read_layer(cache: jax.Array, layer: int | jax.Array) -> jax.Array:
    """Layer ``layer``'s entry of a stacked cache [layers, ...]."""
    return jax.lax.dynamic_index_in_dim(cache, layer, axis=0, keepdims=False)


def constrain_embed(x: jax.Array) -> jax.Array:
    """Constraint for [batch, len, embed] activations (the residual stream)."""
    return constrain(x, ("activation_batch", "activation_length", "activation_embed"))


def constrain_mlp(x: jax.Array) -> jax.Array:
    """Constraint for [batch, len, mlp] hidden activations of the MLP."""
    return constrain(x, ("activation_batch", "activation_length", "activation_mlp"))


def head_accumulation_dtype(dtype: Dtype, logits_dtype: Dtype) -> Dtype:
    """The output head's matmul type: the wider of the compute and the logits dtype."""
    return jnp.promote_types(dtype, logits_dtype)


def output_logits(logits: jax.Array, dtype: Any) -> jax.Array:
    """Logits [batch, (len,) vocab] constrained to the vocab sharding, cast to ``dtype``."""
    names = ("activation_batch", "activation_length")[: logits.ndim - 1]
    return constrain(logits, (*names, "activation_vocab")).astype(dtype)


def constrain_heads(x: jax.Array) -> jax.Array:
    """Constraint for [batch, len, heads, head_dim] activations."""
    return constrain(
        x, ("activation_batch", "activation_length", "activation_heads", "activation_head_dim")
    )
