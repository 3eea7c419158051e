"""The decode cache: an explicit pytree of attention keys/values for jitted decoding.

Both model families share one cache type and one calling convention (see
``kid.models.decoder`` / ``kid.models.t5`` docstrings)::

    logits, cache = module.apply({"params": p}, input_ids, attention_mask,
                                 max_new_tokens=n, method="prefill")   # logits [B, V]
    logits, cache = module.apply({"params": p}, tokens, cache,
                                 method="decode")                       # tokens [B, T]

The cache is a plain ``flax.struct`` dataclass, so it can be a ``lax.scan`` /
``lax.while_loop`` carry, donated to jit, re-sharded, and reordered for beam search with
``take`` / ``repeat``. Slots are shared by the batch: ``index`` is the next slot to write, and
``mask`` marks slots holding real tokens (prompt padding is written but masked). Writing past
``max_length`` is not checked (the index is traced); size the cache with ``max_new_tokens``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DecodeCache:
    """Self-attention keys/values per layer, plus T5's encoder-side tensors.

    Attributes:
      keys, values: [layers, batch, max_length, kv_heads, head_dim] self-attention cache.
      mask: [batch, max_length] bool, True where a slot holds a real (non-padding) token.
      index: [] int32, the next slot to write; slots >= index are empty.
      cross_keys, cross_values: [layers, batch, enc_len, heads, head_dim] encoder keys/values
        for T5's cross-attention, computed once at prefill (None for decoder-only models).
      encoder_mask: [batch, enc_len] bool encoder padding mask (T5), else None.
    """

    keys: jax.Array
    values: jax.Array
    mask: jax.Array
    index: jax.Array
    cross_keys: jax.Array | None = None
    cross_values: jax.Array | None = None
    encoder_mask: jax.Array | None = None

    @property
    def lengths(self) -> jax.Array:
        """[batch] int32 number of real tokens cached per row (the next RoPE position)."""
        return jnp.sum(self.mask, axis=1, dtype=jnp.int32)

    def take(self, rows: jax.Array) -> DecodeCache:
        """The cache of batch rows ``rows`` [new_batch] (beam search reordering)."""
        return self._map_batch(lambda x, axis: jnp.take(x, rows, axis=axis))

    def reorder_beams(self, rows: jax.Array) -> DecodeCache:
        """``take`` for beam search, whose ``rows`` stay within each example's beams: the
        encoder-side tensors are equal across those beams, so they are not gathered again."""
        return self._map_batch(lambda x, axis: jnp.take(x, rows, axis=axis), encoder_side=False)

    def repeat(self, n: int) -> DecodeCache:
        """Each row repeated n times consecutively (row i -> rows i*n .. i*n+n-1)."""
        return self._map_batch(lambda x, axis: jnp.repeat(x, n, axis=axis))

    def _map_batch(self, fn, encoder_side: bool = True) -> DecodeCache:
        """Apply ``fn(array, batch_axis)`` to every array with a batch axis (the encoder-side
        ones only when ``encoder_side``)."""

        def maybe(x, axis):
            return x if x is None or not encoder_side else fn(x, axis)

        return self.replace(
            keys=fn(self.keys, 1),
            values=fn(self.values, 1),
            mask=fn(self.mask, 0),
            cross_keys=maybe(self.cross_keys, 1),
            cross_values=maybe(self.cross_values, 1),
            encoder_mask=maybe(self.encoder_mask, 0),
        )


def empty(
    batch: int, max_length: int, layers: int, kv_heads: int, head_dim: int, dtype
) -> DecodeCache:
    """A cache with no tokens in it."""
    shape = (layers, batch, max_length, kv_heads, head_dim)
    return DecodeCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        mask=jnp.zeros((batch, max_length), bool),
        index=jnp.zeros((), jnp.int32),
    )
