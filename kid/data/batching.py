"""Batch layouts shared by the training step and decoding (plain numpy, host side).

Both layouts align `targets` and `loss_mask` with the model's logits, so one loss
function serves both: loss = sum(xent(logits, targets) * loss_mask).

Encoder-decoder (T5), prompt length P, target length T::

    input_ids, attention_mask             [B, P]  prompt, right-padded (encoder input)
    decoder_input_ids                     [B, T]  targets shifted right after decoder_start_id
    decoder_attention_mask                [B, T]
    targets, loss_mask                    [B, T]

Decoder-only (Llama, Qwen2): the prompt is left-padded to P and the target follows,
right-padded to T, so every prompt ends at column P - 1 and decoding starts at P::

    prompt_ids, prompt_mask               [B, P]      the decoding input
    input_ids, attention_mask, positions  [B, P + T]  positions = cumsum(mask) - 1
    targets, loss_mask                    [B, P + T]  targets[:, i] = input_ids[:, i + 1]

The target tokens in input_ids are columns P.. where attention_mask is 1 (KID masks
and rewrites those). Both layouts carry `weights` [B] (0 for padding rows) and
`example_index` [B] (-1 for padding rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ENCODER_DECODER = "encoder_decoder"
DECODER_ONLY = "decoder_only"
LAYOUTS = (ENCODER_DECODER, DECODER_ONLY)


def bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f"length {length} exceeds the largest bucket {max(buckets)}")


def _pad(seqs: Sequence[np.ndarray], length: int, pad_id: int, *, left: bool, what: str):
    """[B, length] ids and 0/1 mask; sequences padded on the left or on the right."""
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for row, seq in enumerate(seqs):
        n = len(seq)
        if n > length:
            raise ValueError(f"{what} of row {row} has {n} tokens, more than {length}")
        span = slice(length - n, length) if left else slice(0, n)
        ids[row, span] = seq
        mask[row, span] = 1
    return ids, mask


def encoder_decoder_batch(
    prompts: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    weights: np.ndarray,
    example_index: np.ndarray,
    *,
    prompt_len: int,
    target_len: int,
    pad_id: int,
    decoder_start_id: int,
) -> dict[str, np.ndarray]:
    input_ids, attention_mask = _pad(prompts, prompt_len, pad_id, left=False, what="prompt")
    target_ids, target_mask = _pad(targets, target_len, pad_id, left=False, what="target")
    decoder_input_ids = np.full_like(target_ids, pad_id)
    decoder_input_ids[:, 0] = decoder_start_id
    decoder_input_ids[:, 1:] = np.where(target_mask[:, 1:], target_ids[:, :-1], pad_id)
    weights = np.asarray(weights, np.float32)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": target_mask,
        "targets": target_ids,
        "loss_mask": target_mask.astype(np.float32) * weights[:, None],
        "weights": weights,
        "example_index": np.asarray(example_index, np.int32),
    }


def decoder_only_batch(
    prompts: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    weights: np.ndarray,
    example_index: np.ndarray,
    *,
    prompt_len: int,
    target_len: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    prompt_ids, prompt_mask = _pad(prompts, prompt_len, pad_id, left=True, what="prompt")
    target_ids, target_mask = _pad(targets, target_len, pad_id, left=False, what="target")
    input_ids = np.concatenate([prompt_ids, target_ids], axis=1)
    attention_mask = np.concatenate([prompt_mask, target_mask], axis=1)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0).astype(np.int32)
    next_ids = np.full_like(input_ids, pad_id)
    next_ids[:, :-1] = input_ids[:, 1:]
    is_target = np.zeros_like(attention_mask)
    is_target[:, prompt_len - 1 : -1] = target_mask
    weights = np.asarray(weights, np.float32)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "positions": positions,
        "targets": next_ids,
        "loss_mask": is_target.astype(np.float32) * weights[:, None],
        "weights": weights,
        "example_index": np.asarray(example_index, np.int32),
    }


def prompt_arrays(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) that decoding starts from, for either layout."""
    if "prompt_ids" in batch:
        return batch["prompt_ids"], batch["prompt_mask"]
    return batch["input_ids"], batch["attention_mask"]
