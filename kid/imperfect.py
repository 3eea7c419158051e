"""KID's imperfect-data rollout: mask -> the student predicts -> rewrite (Zhong et al. 2024).

Exposure bias comes from training on gold prefixes while decoding on the model's own.
KID simulates the model's own prefixes cheaply: a fraction alpha of the gold target tokens
is masked, the frozen student predicts those positions in one teacher-forced pass, and the
predictions are spliced into the gold sequence, giving y_hat. Student and teacher are then
distilled on y_hat (``kid.methods``).

Choices the paper leaves open, made here:
- Which positions: only real target tokens before EOS, never prompt, padding or EOS. With
  n such tokens in a row, ``max(1, round(alpha * n))`` are masked when alpha > 0 and n >= 1
  (round half to even, as numpy and Python round), none when alpha = 0. Strategies:
  "random" (uniformly without replacement), "uniform" (evenly spaced, centred), "hard" /
  "easy" (highest / lowest entropy, on the gold sequence, of the student's distribution
  that the fill is drawn from: the tokenizer's vocabulary without the banned ids below, so
  neither an embedding table's padding rows nor the mask token's column count).
- The mask token is the tokenizer's (``kid.data.tokenizer``: a reserved or added token); a
  prediction is never the mask token, the pad token, nor an id outside the tokenizer's
  vocabulary. It may be EOS, mid-sequence too (``fill_logits``).
- The causal shift: the logit that predicts target position i is read at the column before
  it (decoder-only: column P + i - 1; T5: decoder input i holds target i - 1), which is
  exactly ``kid.models.forward``'s target alignment. In the parallel pass that prediction
  sees the masked prefix: earlier masked positions show the mask token, not the gold token
  and not their own predictions.
- Fill: "argmax" (default) or "sample" at ``fill_temperature``.
- The cascade variant (not in the paper): masked positions are filled left to right, each
  prediction seeing the already rewritten prefix. It is forced decoding in one
  ``lax.while_loop`` with the KV cache: unmasked positions (gold, and padding) are forced,
  masked ones are predicted, and the loop decodes the full width with no stop token, so an
  EOS fill never ends a row, not even after the row's last forced token (a target cut to
  the maximum length has no EOS, and its last positions may all be masked).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid import decoding, losses
from kid.data import batching
from kid.models import forward as fwd

STRATEGIES = ("random", "uniform", "hard", "easy")
FILLS = ("argmax", "sample")


@dataclasses.dataclass(frozen=True)
class Imperfection:
    """How KID rewrites gold targets (static: part of the jitted step's configuration).

    Attributes:
      mask_id: the tokenizer's mask token.
      eos_id: EOS id(s); EOS is never masked.
      pad_id: the tokenizer's pad token, never a fill (unless it is also an EOS id).
      alpha: fraction of each row's target tokens (before EOS) to mask.
      strategy: one of STRATEGIES.
      fill: "argmax" or "sample" (at fill_temperature).
      cascade: fill left to right with the KV cache instead of one parallel pass.
      vocab_size: the tokenizer's vocabulary; ids at and above it are never predicted.
    """

    mask_id: int
    eos_id: int | Sequence[int]
    pad_id: int
    alpha: float = 0.2
    strategy: str = "random"
    fill: str = "argmax"
    fill_temperature: float = 1.0
    cascade: bool = False
    vocab_size: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if not self.fill_temperature > 0:
            raise ValueError(f"fill_temperature must be > 0, got {self.fill_temperature}")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return tuple(self.eos_id) if isinstance(self.eos_id, Sequence) else (self.eos_id,)

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Ids below vocab_size that a fill never takes: the mask token, and the pad token
        unless it is also an EOS id (a tokenizer without a pad token pads with EOS)."""
        return (self.mask_id,) + (() if self.pad_id in self.eos_ids else (self.pad_id,))


def eligible_positions(targets: jax.Array, real: jax.Array, eos_ids: Sequence[int]) -> jax.Array:
    """[B, T] bool: real target tokens before the row's first EOS (the maskable ones)."""
    is_eos = jnp.isin(targets, jnp.asarray(eos_ids)) & real
    before_eos = jnp.cumsum(is_eos, axis=1) == 0
    return real & before_eos


def mask_counts(eligible: jax.Array, alpha: float) -> jax.Array:
    """[B] int32: max(1, round(alpha * n)) for rows with n >= 1 eligible tokens, 0 if alpha = 0."""
    n = jnp.sum(eligible, axis=1)
    if alpha == 0:
        return jnp.zeros_like(n, jnp.int32)
    k = jnp.maximum(1, jnp.round(alpha * n.astype(jnp.float32))).astype(jnp.int32)
    return jnp.where(n >= 1, jnp.minimum(k, n), 0).astype(jnp.int32)


def _top_k_per_row(scores: jax.Array, eligible: jax.Array, k: jax.Array) -> jax.Array:
    """[B, T] bool: the k[b] highest-scoring eligible positions of each row."""
    scores = jnp.where(eligible, scores, -jnp.inf)
    order = jnp.argsort(-scores, axis=1, stable=True)  # best first
    rank = jnp.argsort(order, axis=1)
    return eligible & (rank < k[:, None])


def _evenly_spaced(eligible: jax.Array, k: jax.Array) -> jax.Array:
    """[B, T] bool: k[b] eligible positions evenly spaced (centred) over each row's n.

    Eligible position number o (0-based, in order) is chosen when floor((o + 1) k / n + 1/2)
    exceeds floor(o k / n + 1/2): exactly k crossings, at most one per position.
    """
    n = jnp.sum(eligible, axis=1, keepdims=True)
    order = jnp.cumsum(eligible, axis=1) - 1
    k = k[:, None]
    safe_n = jnp.maximum(n, 1)
    before = (2 * order * k + safe_n) // (2 * safe_n)
    after = (2 * (order + 1) * k + safe_n) // (2 * safe_n)
    return eligible & (after > before)


def choose_positions(
    eligible: jax.Array,
    alpha: float,
    strategy: str,
    *,
    rng: jax.Array | None = None,
    entropy: jax.Array | None = None,
) -> jax.Array:
    """[B, T] bool, the positions to mask (``mask_counts`` of them per row).

    Args:
      eligible: [B, T] bool from ``eligible_positions``.
      strategy: "random" needs ``rng``; "hard" / "easy" need the student's ``entropy`` [B, T]
        on the gold sequence; "uniform" needs neither.
    """
    k = mask_counts(eligible, alpha)
    if strategy == "uniform":
        return _evenly_spaced(eligible, k)
    if strategy == "random":
        if rng is None:
            raise ValueError("the random strategy needs an rng")
        return _top_k_per_row(jax.random.uniform(rng, eligible.shape), eligible, k)
    if strategy in ("hard", "easy"):
        if entropy is None:
            raise ValueError(f"the {strategy} strategy needs the student's entropy")
        return _top_k_per_row(entropy if strategy == "hard" else -entropy, eligible, k)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def fill_logits(logits: jax.Array, spec: Imperfection) -> jax.Array:
    """Float32 logits [..., V] of the fill: ``spec.banned_ids`` (the mask token; the pad
    token unless it is an EOS id) and ids >= ``spec.vocab_size`` are -inf.

    EOS is allowed, mid-sequence too. KID rewrites y with the student's own predictions,
    and a premature EOS is one of the student's mistakes, exactly the imperfect data it
    should learn to recover from; the row is not cut there: the positions after that EOS
    keep their gold (or filled) tokens and stay in the loss, which keeps the gold row's
    mask. Pad is banned: it is the filler after a row's end, which no step learns to
    predict (padding carries no loss), so it would be no prediction of the student's.
    """
    ids = jnp.arange(logits.shape[-1])
    banned = jnp.isin(ids, jnp.asarray(spec.banned_ids))
    if spec.vocab_size is not None:
        banned = banned | (ids >= spec.vocab_size)
    return jnp.where(banned, -jnp.inf, logits.astype(jnp.float32))


def _draw(logits: jax.Array, rng: jax.Array, spec: Imperfection) -> jax.Array:
    logits = fill_logits(logits, spec)
    if spec.fill == "argmax":
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, logits / spec.fill_temperature, axis=-1).astype(jnp.int32)


def predict_parallel(
    module: nn.Module,
    variables: dict,
    batch: fwd.Batch,
    selected: jax.Array,
    rng: jax.Array,
    spec: Imperfection,
) -> jax.Array:
    """[B, T] the student's predictions at every position of the masked batch (one
    no-gradient teacher-forced pass; only the ``selected`` positions are used)."""
    targets, _ = fwd.target_tokens(batch)
    masked = fwd.with_targets(batch, jnp.where(selected, spec.mask_id, targets))
    logits = jax.named_call(fwd.forward, name="predict")(
        module, jax.lax.stop_gradient(variables), masked
    )
    return _draw(logits, rng, spec)


def predict_cascade(
    module: nn.Module,
    variables: dict,
    batch: fwd.Batch,
    selected: jax.Array,
    rng: jax.Array,
    spec: Imperfection,
) -> jax.Array:
    """[B, T] tokens decoded left to right: unmasked positions forced to the batch's targets
    (padding included), masked ones predicted from the already rewritten prefix with the KV
    cache. Every row is decoded to the full width T (no stop token): a masked position after
    an EOS fill is still the student's prediction."""
    targets, _ = fwd.target_tokens(batch)
    prompt_ids, prompt_mask = batching.prompt_arrays(batch)
    width = targets.shape[1]
    logits, cache, step = decoding.prefill(module, variables, prompt_ids, prompt_mask, width)

    def banned_step(tokens, cache, i):
        logits, cache = step(tokens, cache, i)
        return fill_logits(logits, spec), cache

    first = fill_logits(logits, spec)
    select = decoding.sampler(
        "greedy" if spec.fill == "argmax" else "sample",
        temperature=spec.fill_temperature,
        forced_tokens=targets,
        forced_mask=~selected,
    )
    decoded = jax.named_call(decoding.sample, name="predict")(
        first,
        cache,
        banned_step,
        max_new_tokens=width,
        select=select,
        rng=rng,
        eos_id=None,  # an EOS fill never ends a row: every masked position is predicted
    )
    return decoded.tokens


def imperfect_batch(
    module: nn.Module,
    variables: dict,
    batch: fwd.Batch,
    rng: jax.Array,
    spec: Imperfection,
) -> tuple[fwd.Batch, jax.Array]:
    """The batch with targets rewritten to y_hat, and the [B, T] bool mask of rewritten
    positions. ``variables`` are the student's (no gradient flows through this)."""
    position_rng, fill_rng = jax.random.split(rng)
    targets, real = fwd.target_tokens(batch)
    eligible = eligible_positions(targets, real, spec.eos_ids)
    entropy = None
    if spec.strategy in ("hard", "easy") and spec.alpha > 0:
        gold_logits = jax.named_call(fwd.forward, name="predict")(
            module, jax.lax.stop_gradient(variables), batch
        )
        entropy = losses.token_entropy(fill_logits(gold_logits, spec))
    selected = choose_positions(
        eligible, spec.alpha, spec.strategy, rng=position_rng, entropy=entropy
    )
    if spec.alpha == 0:
        return batch, selected
    predict = predict_cascade if spec.cascade else predict_parallel
    fills = predict(module, variables, batch, selected, fill_rng, spec)
    return fwd.with_targets(batch, jnp.where(selected, fills, targets)), selected
