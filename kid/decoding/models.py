"""kid models as step functions, `generate` (CONTRACT 7), and host-side shape buckets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from kid.data import batching
from kid.decoding.beam import BeamSearchResult, beam_search
from kid.decoding.sampling import (
    Decoded,
    EosId,
    GuidedDecoded,
    StepFn,
    guided_sampler,
    sample,
    sampler,
)

# ----------------------------------------------------------------------------------------------
# Models: both families share `prefill` / `decode` (see kid.models.decoder and kid.models.t5).


def _variables(params: Any) -> dict:
    """Flax variables from params, or from variables already holding "params" (+ "lora")."""
    return params if isinstance(params, dict) and "params" in params else {"params": params}


def _special_ids(module: Any, eos_id: EosId, pad_id: int | None) -> tuple[tuple[int, ...], int]:
    """Stop tokens as a tuple (None: the config's; negative ids are dropped, so they never
    stop) and pad (the config's, else the first stop token, else 0)."""
    config = module.config
    eos = config.eos_token_id if eos_id is None else eos_id
    stops = tuple(int(i) for i in np.ravel(() if eos is None else eos) if i >= 0)
    for fallback in (pad_id, config.pad_token_id, *stops[:1], 0):
        if fallback is not None:
            return stops, fallback


def prefill(
    module: Any,
    params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    max_new_tokens: int,
    *,
    vocab_size: int | None = None,
) -> tuple[jax.Array, Any, StepFn]:
    """Runs the prompt through a kid model: the arguments of `sample` / `beam_search`.

    Decoding is not differentiated (a while_loop has no reverse mode): the parameters pass
    through stop_gradient, so a loss that decodes with the parameters it differentiates still
    has a gradient, from its own forward passes over the decoded tokens.

    Args:
      vocab_size: the tokenizer's vocabulary; logits are sliced to it, so the padding rows of
        an embedding table (Qwen2.5: 151,936 rows for 151,665 tokens) are never chosen.

    Returns:
      (logits [batch, vocab] of the first new token, its DecodeCache with room for
      max_new_tokens more tokens, tokens_to_logits: one cached decoder step per call).
    """
    variables = jax.lax.stop_gradient(_variables(params))
    if vocab_size is not None and not 0 < vocab_size <= module.config.vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} must be in [1, {module.config.vocab_size}] (the model's rows)"
        )
    rows = slice(None, vocab_size)

    def tokens_to_logits(tokens, cache, step):
        del step  # the cache knows each row's position
        logits, cache = module.apply(variables, tokens[:, None], cache, method="decode")
        return logits[:, 0, rows], cache

    logits, cache = module.apply(
        variables, input_ids, attention_mask, max_new_tokens=max_new_tokens, method="prefill"
    )
    return logits[:, rows], cache, tokens_to_logits


def generate(
    module: Any,
    params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    max_new_tokens: int,
    method: str = "greedy",
    rng: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: EosId = None,
    pad_id: int | None = None,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    forced_tokens: jax.Array | None = None,
    forced_mask: jax.Array | None = None,
    vocab_size: int | None = None,
) -> Decoded | BeamSearchResult:
    """Continues prompts with a kid model (CONTRACT 7); traceable inside an outer jax.jit.

    The prompt is run once (T5: encoded once, then the decoder start token; decoder-only: the
    left-padded prompt, positions = cumsum(mask) - 1), then one cached decoder step per new
    token in a while_loop that exits when every row has emitted EOS.

    Args:
      module: a kid.models module (T5 or DecoderLM).
      params: its params, or variables {"params": ..., "lora": ...}.
      input_ids, attention_mask: [batch, length] encoder inputs (T5) or left-padded prompts.
      max_new_tokens: static output length.
      method: "greedy", "sample" (temperature, then top_k, then top_p; needs rng) or "beam"
        (num_beams, length_penalty; returns all beams, best first).
      eos_id: stop token or tokens (any of them ends a row); None uses the model config's
        (an int or a tuple), a negative id never stops.
      pad_id: written after EOS; None uses the config's pad token, else the first EOS, else 0.
      forced_tokens, forced_mask: [batch, max_new_tokens]; where the mask is True the token is
        fixed and the model only conditions on it (greedy or sample); every forced token is
        kept (a row ends at EOS only at or after its last forced position).
      vocab_size: the tokenizer's vocabulary; ids at or above it are never chosen.

    Returns:
      `Decoded` (tokens [batch, max_new_tokens] int32, lengths, logprobs), or for "beam" a
      `BeamSearchResult` whose `.tokens` / `.logprobs` are the best beam's.
    """
    if method not in ("greedy", "sample", "beam"):
        raise ValueError(f"method must be 'greedy', 'sample' or 'beam', got {method!r}")
    if method == "sample" and rng is None:
        raise ValueError("method='sample' needs an rng key")
    eos_id, pad_id = _special_ids(module, eos_id, pad_id)
    logits, cache, step = prefill(
        module, params, input_ids, attention_mask, max_new_tokens, vocab_size=vocab_size
    )
    if method == "beam":
        if forced_tokens is not None or forced_mask is not None:
            raise ValueError("forced decoding is greedy or sampled, not beam search")
        return beam_search(
            logits,
            cache.repeat(num_beams),
            step,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
            length_penalty=length_penalty,
            reorder_cache=lambda cache, rows: cache.reorder_beams(rows),
        )
    select = sampler(
        method,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        forced_tokens=forced_tokens,
        forced_mask=forced_mask,
    )
    return sample(
        logits,
        cache,
        step,
        max_new_tokens=max_new_tokens,
        select=select,
        rng=rng,
        eos_id=eos_id,
        pad_id=pad_id,
    )


def generate_guided(
    student: Any,
    student_params: Any,
    teacher: Any,
    teacher_params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    teacher_top_k: int,
    max_new_tokens: int,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: EosId = None,
    pad_id: int | None = None,
    vocab_size: int | None = None,
) -> GuidedDecoded:
    """Teacher-guided sampling (SKD, see `guided_sampler`) with both KV caches in one loop.

    Student and teacher read the same prompts (same tokenizer); EOS / pad default to the
    student config's; `vocab_size` (the tokenizer's) slices both models' logits. Returns
    `GuidedDecoded` with the student's log-probabilities.
    """
    eos_id, pad_id = _special_ids(student, eos_id, pad_id)
    student_logits, student_cache, student_step = prefill(
        student, student_params, input_ids, attention_mask, max_new_tokens, vocab_size=vocab_size
    )
    teacher_logits, teacher_cache, teacher_step = prefill(
        teacher, teacher_params, input_ids, attention_mask, max_new_tokens, vocab_size=vocab_size
    )

    def tokens_to_logits(tokens, caches, step):
        student_logits, student_cache = student_step(tokens, caches[0], step)
        teacher_logits, teacher_cache = teacher_step(tokens, caches[1], step)
        return (student_logits, teacher_logits), (student_cache, teacher_cache)

    return sample(
        (student_logits, teacher_logits),
        (student_cache, teacher_cache),
        tokens_to_logits,
        max_new_tokens=max_new_tokens,
        select=guided_sampler(teacher_top_k, temperature=temperature, top_k=top_k, top_p=top_p),
        rng=rng,
        eos_id=eos_id,
        pad_id=pad_id,
    )


# ----------------------------------------------------------------------------------------------
# Host-side shape bucketing: every distinct (batch, prompt length, max_new_tokens) compiles anew.


def bucket(length: int, buckets: Sequence[int] | None = None, *, minimum: int = 8) -> int:
    """The smallest bucket >= `length`: from `buckets`, else the next power of two >= minimum."""
    if buckets is None:
        return max(minimum, 1 << max(0, length - 1).bit_length())
    return batching.bucket(length, buckets)


def pad_prompts(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    buckets: Sequence[int] | None = None,
    pad_id: int = 0,
    side: str = "left",
) -> tuple[np.ndarray, np.ndarray]:
    """Re-pads a prompt batch to the bucket of its longest prompt, on the host.

    Columns that are padding in every row are dropped first, so a batch padded for the
    longest prompt of a whole dataset shrinks to what it needs.

    Args:
      input_ids, attention_mask: [batch, length] prompts, padded on `side`.
      side: "left" for decoder-only prompts, "right" for encoder inputs.

    Returns:
      (input_ids, attention_mask) [batch, bucket(longest prompt)] numpy arrays.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask).astype(bool)
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be "
            "the same [batch, length] shape"
        )
    used = np.flatnonzero(attention_mask.any(0))
    keep = slice(used[0], used[-1] + 1) if used.size else slice(0, 0)
    input_ids, attention_mask = input_ids[:, keep], attention_mask[:, keep]
    width = bucket(input_ids.shape[1], buckets) - input_ids.shape[1]
    padding = ((0, 0), (width, 0) if side == "left" else (0, width))
    return (
        np.pad(input_ids, padding, constant_values=pad_id),
        np.pad(attention_mask, padding).astype(np.int32),
    )
