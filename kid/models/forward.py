"""One forward pass for both model families, on the batch layouts of ``kid.data.batching``.

Every KD method needs the logits of the T target tokens, aligned with the targets they
predict, for a student and a teacher that may be T5 or decoder-only. ``forward`` gives
them as [B, T, V] for both layouts and ``targets_and_mask`` gives the matching [B, T]
targets and loss mask, so a loss never needs to know the family:

    logits = forward(module, variables, batch)          # [B, T, V]
    targets, mask = targets_and_mask(batch)             # [B, T], [B, T]

Decoder-only (prompt left-padded to P, targets right-padded to T): the logit at column i
predicts the token at column i + 1, so the targets' logits are columns P - 1 .. P + T - 2.
The hidden states are sliced to those columns *before* the output head: the vocabulary
projection never runs over the prompt (at Qwen scale, batch 16 x 1,152 tokens, full fp32
logits are 10.4 GiB against 1.16 GiB for the targets alone).

The batch builders are jittable, for use inside a training step: ``with_targets`` splices
new target tokens into a batch (KID's rewrite), ``continuation_batch`` turns decoded
continuations of a batch's prompts into a training batch (on-policy methods).
"""

from __future__ import annotations

from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid.models.build import is_encoder_decoder

Batch = dict[str, jax.Array]
Variables = dict[str, Any]
COLLECTIONS = ("params", "lora")


class Continuations(Protocol):
    """What ``continuation_batch`` reads of ``kid.decoding.Decoded``."""

    tokens: jax.Array  # [B, T] int32, EOS emitted, pad after
    lengths: jax.Array  # [B] int32, tokens per row (EOS included)


def is_decoder_only_batch(batch: Batch) -> bool:
    """True for the decoder-only layout (it carries the decoding prompt separately)."""
    return "prompt_ids" in batch


def prompt_length(batch: Batch) -> int:
    """P, the static prompt width of a decoder-only batch."""
    return batch["prompt_ids"].shape[1]


def _check_layout(module: nn.Module, batch: Batch) -> None:
    if is_encoder_decoder(module) == is_decoder_only_batch(batch):
        family = "encoder-decoder" if is_encoder_decoder(module) else "decoder-only"
        layout = "decoder-only" if is_decoder_only_batch(batch) else "encoder-decoder"
        raise ValueError(f"a {family} model was given a {layout} batch")


def forward(
    module: nn.Module,
    variables: Variables,
    batch: Batch,
    *,
    logits_at: str = "targets",
    deterministic: bool = True,
    rngs: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """Logits of a batch, for either family.

    Args:
      module: a kid.models module (T5 or DecoderLM).
      variables: {"params": ..., ["lora": ...]}.
      batch: a ``kid.data.batching`` batch of the module's layout.
      logits_at: "targets" -> [B, T, V], the logits predicting each target token (aligned
        with ``targets_and_mask``); "all" -> the logits of every input column ([B, P + T, V]
        for decoder-only models; the same [B, T, V] for T5).
      deterministic: False enables dropout (needs a "dropout" rng in ``rngs``).

    Returns:
      float logits in the model's ``logits_dtype``.
    """
    if logits_at not in ("targets", "all"):
        raise ValueError(f"logits_at must be 'targets' or 'all', got {logits_at!r}")
    _check_layout(module, batch)
    if is_encoder_decoder(module):
        inputs = (
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch["decoder_attention_mask"],
        )
        columns = slice(None)
    else:
        inputs = (batch["input_ids"], batch["attention_mask"])
        p = prompt_length(batch)
        columns = slice(p - 1, batch["input_ids"].shape[1] - 1)
    if logits_at == "all":
        columns = slice(None)

    def run(model, *inputs):
        hidden = model.hidden_states(*inputs, deterministic=deterministic)
        return model.output_head(hidden[:, columns])

    return module.apply(variables, *inputs, method=run, rngs=rngs)


def targets_and_mask(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(targets int [B, T], loss mask float [B, T]) aligned with ``forward(...)``'s logits.

    The mask is 1 at real target tokens (EOS included) times the row weight, 0 at padding.
    """
    if not is_decoder_only_batch(batch):
        return batch["targets"], batch["loss_mask"]
    p = prompt_length(batch)
    return batch["targets"][:, p - 1 : -1], batch["loss_mask"][:, p - 1 : -1]


def target_tokens(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(target token ids [B, T], bool [B, T] True at real target tokens), for either layout;
    unlike the loss mask, padding rows (weight 0) are not zeroed."""
    if not is_decoder_only_batch(batch):
        return batch["targets"], batch["decoder_attention_mask"].astype(bool)
    p = prompt_length(batch)
    return batch["input_ids"][:, p:], batch["attention_mask"][:, p:].astype(bool)


def _shift_right(first: jax.Array, tokens: jax.Array, mask: jax.Array, old: jax.Array):
    """Decoder inputs [B, T]: ``first`` [B, 1], then tokens[:, :-1] where the next position is a
    real token, else what ``old`` [B, T] held there (padding)."""
    shifted = jnp.where(mask[:, 1:], tokens[:, :-1], old[:, 1:])
    return jnp.concatenate([first, shifted], axis=1)


def with_targets(batch: Batch, new_targets: jax.Array) -> Batch:
    """The batch with its target tokens replaced by ``new_targets`` [B, T] (KID's splice).

    Only real target positions change (padding keeps its pad ids); prompts, masks and weights
    are unchanged, and the decoder inputs / next-token targets are rebuilt consistently.
    """
    _, real = target_tokens(batch)
    if new_targets.shape != real.shape:
        raise ValueError(f"new_targets {new_targets.shape} must be [B, T] = {real.shape}")
    new_targets = new_targets.astype(jnp.int32)
    if not is_decoder_only_batch(batch):
        targets = jnp.where(real, new_targets, batch["targets"])
        decoder_inputs = _shift_right(
            batch["decoder_input_ids"][:, :1], targets, real, batch["decoder_input_ids"]
        )
        return {**batch, "targets": targets, "decoder_input_ids": decoder_inputs}
    p = prompt_length(batch)
    ids = jnp.asarray(batch["input_ids"])
    ids = ids.at[:, p:].set(jnp.where(real, new_targets, ids[:, p:]))
    next_ids = jnp.concatenate([ids[:, 1:], batch["targets"][:, -1:]], axis=1)
    return {**batch, "input_ids": ids, "targets": next_ids}


def continuation_batch(batch: Batch, decoded: Continuations, *, pad_id: int) -> Batch:
    """A training batch whose targets are ``decoded`` continuations of ``batch``'s prompts.

    Args:
      batch: a training batch (its prompts, row weights and example indices are kept).
      decoded: ``kid.decoding.Decoded`` of those prompts: tokens [B, T'] and lengths [B];
        the loss mask covers each row's first ``lengths`` tokens (EOS included).
      pad_id: the id written at padded target positions.

    Returns:
      a batch of the same layout with target length T'.
    """
    tokens = decoded.tokens.astype(jnp.int32)
    width = tokens.shape[1]
    real = jnp.arange(width)[None, :] < decoded.lengths[:, None]  # [B, T']
    tokens = jnp.where(real, tokens, pad_id)
    weights = batch["weights"]
    loss_mask = real.astype(jnp.float32) * weights[:, None]
    common = {"weights": weights, "example_index": batch["example_index"]}
    if not is_decoder_only_batch(batch):
        start = batch["decoder_input_ids"][:, :1]
        return {
            **common,
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "decoder_input_ids": _shift_right(start, tokens, real, jnp.full_like(tokens, pad_id)),
            "decoder_attention_mask": real.astype(jnp.int32),
            "targets": tokens,
            "loss_mask": loss_mask,
        }
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    ids = jnp.concatenate([prompt_ids, tokens], axis=1)
    mask = jnp.concatenate([prompt_mask, real.astype(prompt_mask.dtype)], axis=1)
    p = prompt_ids.shape[1]
    zeros = jnp.zeros((tokens.shape[0], p - 1), jnp.float32)
    return {
        **common,
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "input_ids": ids,
        "attention_mask": mask,
        "positions": jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32),
        "targets": jnp.concatenate([ids[:, 1:], jnp.full_like(ids[:, :1], pad_id)], axis=1),
        "loss_mask": jnp.concatenate([zeros, loss_mask, zeros[:, :1]], axis=1),
    }


def split_variables(variables: Variables, trainable: str = "params") -> tuple[Any, Variables]:
    """(the trainable collection, the other collections) of a model's variables.

    trainable="params": full fine-tuning; "lora": LoRA adapters train, the base is frozen.
    """
    if trainable not in COLLECTIONS:
        raise ValueError(f"trainable must be one of {COLLECTIONS}, got {trainable!r}")
    if trainable not in variables:
        raise ValueError(f"the variables hold no {trainable!r} collection: {sorted(variables)}")
    frozen = {name: tree for name, tree in variables.items() if name != trainable}
    return variables[trainable], frozen


def join_variables(trainable_tree: Any, frozen: Variables, trainable: str = "params") -> Variables:
    """Inverse of ``split_variables``."""
    if trainable in frozen:
        raise ValueError(f"the frozen variables already hold {trainable!r}")
    return {**frozen, trainable: trainable_tree}
