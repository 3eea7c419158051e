"""The model-agnostic sampling loop and its pluggable token choice (see kid.decoding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Cache = Any
StepFn = Callable[[jax.Array, Cache, jax.Array], tuple[Any, Cache]]
# select(logits, rng, step) -> (tokens [batch], {name: per-token values [batch]}). The values
# are recorded per position, except MAY_END: [batch] bool, False where an EOS chosen now does
# not end the row (absent: every row may end).
SelectFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# Stop tokens: one id, several, or None (never stop); ids that are negative never match.
EosId = int | Sequence[int] | None

MAY_END = "may_end"

NEG_INF = -jnp.inf


@struct.dataclass
class Decoded:
    """Sampled or greedy continuations.

    Attributes:
      tokens: [batch, max_new_tokens] int32; the EOS that ends a row is emitted, pad follows
        it (an EOS chosen before a row's last forced position does not end the row).
      lengths: [batch] int32, tokens emitted per row (the ending EOS included).
      logprobs: [batch, max_new_tokens] float32, log-softmax of the unprocessed logits at each
        emitted token (before temperature / top-k / top-p); 0 after the ending EOS.
    """

    tokens: jax.Array
    lengths: jax.Array
    logprobs: jax.Array


@struct.dataclass
class GuidedDecoded(Decoded):
    """Teacher-guided continuations; `logprobs` are the student's.

    Attributes:
      replaced: [batch, max_new_tokens] bool, True where the teacher rejected the student's
        proposal and sampled the token itself.
    """

    replaced: jax.Array


# ----------------------------------------------------------------------------------------------
# Logits processing.


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf.

    top-k keeps the k largest logits; top-p then keeps the smallest prefix of the remaining
    tokens, by decreasing probability, whose mass reaches `top_p` (the most likely token is
    always kept). Ties with the last kept logit are kept.

    Args:
      logits: [..., vocab] float.
      top_k: static int, 0 disables.
      top_p: static float in (0, 1], 1 disables.

    Returns:
      [..., vocab] logits with the excluded entries at -inf.
    """
    if top_k:
        candidates = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0]  # [..., k] desc
    elif top_p < 1.0:
        candidates = -jnp.sort(-logits, axis=-1)  # [..., vocab] desc
    else:
        return logits
    threshold = candidates[..., -1:]
    if top_p < 1.0:
        probs = jax.nn.softmax(candidates, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        num_kept = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
        threshold = jnp.take_along_axis(candidates, num_kept - 1, axis=-1)
    return jnp.where(logits < threshold, NEG_INF, logits)


def _check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _token_logprob(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """[batch] log-softmax of `logits` [batch, vocab] at `tokens` [batch]."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]


def is_eos(tokens: jax.Array, eos_id: EosId) -> jax.Array:
    """[...] bool, True where `tokens` [...] is one of the stop tokens."""
    if eos_id is None:
        return jnp.zeros(tokens.shape, bool)
    stops = jnp.asarray(eos_id, jnp.int32).reshape(-1)
    return jnp.any(tokens[..., None] == stops, axis=-1)


def _draw(
    logits: jax.Array, rng: jax.Array, greedy: bool, temperature: float, top_k: int, top_p: float
) -> jax.Array:
    """[batch] int32 tokens: argmax, or a sample of the tempered, filtered distribution."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def sampler(
    method: str = "greedy",
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    forced_tokens: jax.Array | None = None,
    forced_mask: jax.Array | None = None,
) -> SelectFn:
    """Builds the token choice of `sample`: greedy or sampled, optionally with forced positions.

    Args:
      method: "greedy" (argmax) or "sample" (temperature, then top-k, then top-p).
      forced_tokens: [batch, max_new_tokens] int, the token at each forced position.
      forced_mask: [batch, max_new_tokens] bool, True where the token is forced; the model
        chooses the others, each seeing the already decoded (partly forced) prefix. A row
        ends at EOS only at or after its last forced position (MAY_END), so an EOS the model
        chooses earlier is kept and the row goes on.
    """
    if method not in ("greedy", "sample"):
        raise ValueError(f"method must be 'greedy' or 'sample', got {method!r}")
    if method == "sample":
        _check_sampling_args(temperature, top_k, top_p)
    if (forced_tokens is None) != (forced_mask is None):
        raise ValueError("forced_tokens and forced_mask must be given together")
    if forced_mask is not None:
        forced_mask = jnp.asarray(forced_mask, bool)
        positions = jnp.arange(forced_mask.shape[1])
        last_forced = jnp.max(jnp.where(forced_mask, positions, -1), axis=1)  # [batch]

    def select(logits, rng, step):
        tokens = _draw(logits, rng, method == "greedy", temperature, top_k, top_p)
        if forced_mask is None:
            return tokens, {"logprobs": _token_logprob(logits, tokens)}
        forced = jax.lax.dynamic_index_in_dim(forced_mask, step, axis=1, keepdims=False)
        fixed = jax.lax.dynamic_index_in_dim(forced_tokens, step, axis=1, keepdims=False)
        tokens = jnp.where(forced, fixed.astype(jnp.int32), tokens)
        return tokens, {"logprobs": _token_logprob(logits, tokens), MAY_END: step >= last_forced}

    return select


def guided_sampler(
    teacher_top_k: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> SelectFn:
    """Builds the token choice of speculative KD (SKD, Xu et al. 2024).

    The student proposes a token by sampling its tempered, top-k/top-p filtered distribution;
    the teacher keeps it when it is among the teacher's `teacher_top_k` most likely tokens,
    otherwise replaces it with a sample of the teacher's tempered distribution. Logits are a
    (student [batch, vocab_s], teacher [batch, vocab_t]) pair; only the shared vocabulary
    prefix is used (vocabularies padded to different sizes).
    """
    _check_sampling_args(temperature, top_k, top_p)
    if teacher_top_k < 1:
        raise ValueError(f"teacher_top_k must be >= 1, got {teacher_top_k}")

    def select(logits, rng, step):
        del step
        vocab = min(logits[0].shape[-1], logits[1].shape[-1])
        student, teacher = (x[:, :vocab].astype(jnp.float32) for x in logits)
        proposal_rng, teacher_rng = jax.random.split(rng)
        proposal = _draw(student, proposal_rng, False, temperature, top_k, top_p)
        kth = jax.lax.top_k(teacher, min(teacher_top_k, vocab))[0][:, -1]
        accepted = jnp.take_along_axis(teacher, proposal[:, None], -1)[:, 0] >= kth
        teacher_sample = _draw(teacher, teacher_rng, False, temperature, 0, 1.0)
        tokens = jnp.where(accepted, proposal, teacher_sample)
        return tokens, {"logprobs": _token_logprob(logits[0], tokens), "replaced": ~accepted}

    return select


# ----------------------------------------------------------------------------------------------
# The decoding loops.


def set_column(buffer: jax.Array, step: jax.Array, values: jax.Array) -> jax.Array:
    """buffer[..., step] = values, for a traced step."""
    return jax.lax.dynamic_update_index_in_dim(buffer, values.astype(buffer.dtype), step, -1)


@struct.dataclass
class _LoopState:
    step: jax.Array  # [] int32, the last position chosen
    cache: Any
    done: jax.Array  # [batch] bool, the row's ending EOS already emitted
    lengths: jax.Array  # [batch] int32
    tokens: jax.Array  # [batch, max_new_tokens] int32
    values: dict[str, jax.Array]  # name -> [batch, max_new_tokens]


def sample(
    initial_logits: Any,
    cache: Cache,
    tokens_to_logits: StepFn,
    *,
    max_new_tokens: int,
    select: SelectFn | None = None,
    rng: jax.Array | None = None,
    eos_id: EosId = None,
    pad_id: int = 0,
) -> Decoded:
    """Decodes `max_new_tokens` tokens one at a time in a `lax.while_loop`.

    Args:
      initial_logits: [batch, vocab] logits for the first new token (or a pytree of such
        arrays that `select` understands, e.g. a (student, teacher) pair).
      cache: the decoding state `tokens_to_logits` threads through (a KV cache).
      tokens_to_logits: step function, see the module docstring.
      max_new_tokens: static number of tokens to decode (>= 1).
      select: token choice from `sampler` / `guided_sampler`; greedy by default.
      rng: PRNG key for sampling; step i uses `fold_in(rng, i)`.
      eos_id: token(s) that finish a row (unless `select` reports MAY_END False); None
        decodes every row to max_new_tokens.
      pad_id: token written after EOS.

    Returns:
      `Decoded` (tokens, lengths, logprobs), or `GuidedDecoded` when `select` also reports
      "replaced".
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    select = select or sampler("greedy")
    rng = jax.random.key(0) if rng is None else rng
    batch = jax.tree.leaves(initial_logits)[0].shape[0]

    def record(state: _LoopState, tokens: jax.Array, values: dict) -> _LoopState:
        """Writes the tokens chosen at state.step; finished rows get pad and value 0."""
        tokens = jnp.where(state.done, pad_id, tokens)
        ends = is_eos(tokens, eos_id) & values.get(MAY_END, True)
        return state.replace(
            done=state.done | ends,
            lengths=state.lengths + (~state.done).astype(jnp.int32),
            tokens=set_column(state.tokens, state.step, tokens),
            values={
                name: set_column(buffer, state.step, jnp.where(state.done, 0, values[name]))
                for name, buffer in state.values.items()
            },
        )

    def choose(state: _LoopState, logits: Any) -> _LoopState:
        return record(state, *select(logits, jax.random.fold_in(rng, state.step), state.step))

    def body(state: _LoopState) -> _LoopState:
        tokens = jax.lax.dynamic_index_in_dim(state.tokens, state.step, 1, keepdims=False)
        logits, cache = tokens_to_logits(tokens, state.cache, state.step)
        return choose(state.replace(step=state.step + 1, cache=cache), logits)

    def not_finished(state: _LoopState) -> jax.Array:
        return (state.step < max_new_tokens - 1) & ~jnp.all(state.done)

    # The first token comes from `initial_logits`; each iteration runs the model once.
    tokens, values = select(initial_logits, jax.random.fold_in(rng, 0), jnp.int32(0))
    init = _LoopState(
        step=jnp.int32(0),
        cache=cache,
        done=jnp.zeros((batch,), bool),
        lengths=jnp.zeros((batch,), jnp.int32),
        tokens=jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
        values={
            n: jnp.zeros((batch, max_new_tokens), v.dtype)
            for n, v in values.items()
            if n != MAY_END
        },
    )
    state = jax.lax.while_loop(not_finished, body, record(init, tokens, values))
    if "replaced" in state.values:
        return GuidedDecoded(
            tokens=state.tokens,
            lengths=state.lengths,
            logprobs=state.values["logprobs"],
            replaced=state.values["replaced"],
        )
    return Decoded(tokens=state.tokens, lengths=state.lengths, logprobs=state.values["logprobs"])
