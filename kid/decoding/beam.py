"""Beam search over the same step functions as `sample` (see kid.decoding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from kid.decoding.sampling import NEG_INF, Cache, EosId, StepFn, is_eos, set_column


@struct.dataclass
class BeamSearchResult:
    """Beams sorted by score, best first.

    Attributes:
      beams: [batch, num_beams, max_new_tokens] int32; EOS is emitted, pad follows it.
      scores: [batch, num_beams] float32, sum of token log-probabilities / length**alpha
        (-inf for beams that do not exist, e.g. more beams than distinct sequences).
      lengths: [batch, num_beams] int32, EOS included.
      beam_logprobs: [batch, num_beams, max_new_tokens] float32 per-token log-probabilities.
    """

    beams: jax.Array
    scores: jax.Array
    lengths: jax.Array
    beam_logprobs: jax.Array

    @property
    def tokens(self) -> jax.Array:
        """[batch, max_new_tokens] the best beam."""
        return self.beams[:, 0]

    @property
    def logprobs(self) -> jax.Array:
        """[batch, max_new_tokens] per-token log-probabilities of the best beam."""
        return self.beam_logprobs[:, 0]


def gather_beams(tree: Any, indices: jax.Array) -> Any:
    """Selects rows of every batch-leading array in `tree` ([batch * beams, ...]).

    Args:
      tree: pytree whose non-scalar leaves are [batch * beams, ...]; scalar leaves (a shared
        cache index) pass through.
      indices: [batch * beams] int, the flat row each new row copies.
    """
    return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, indices, axis=0), tree)


def _length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    return jnp.asarray(length, jnp.float32) ** alpha


@struct.dataclass
class _BeamState:
    step: jax.Array  # [] int32, the last position chosen
    cache: Any  # rows [batch * beams], before reordering by `parents`
    parents: jax.Array  # [batch * beams] the cache row each live beam continues
    alive: jax.Array  # [batch, beams, max_new_tokens] sequences without EOS
    alive_logprob: jax.Array  # [batch, beams] summed log-probabilities (-inf: no beam)
    alive_token_logprobs: jax.Array  # [batch, beams, max_new_tokens]
    finished: jax.Array  # [batch, beams, max_new_tokens] sequences ending in EOS
    finished_score: jax.Array  # [batch, beams], sorted descending (-inf: none yet)
    finished_lengths: jax.Array  # [batch, beams]
    finished_token_logprobs: jax.Array  # [batch, beams, max_new_tokens]


def _top(scores: jax.Array, k: int, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """The k best of `scores` [batch, n] and the matching rows of each [batch, n, ...] array."""
    best, index = jax.lax.top_k(scores, k)
    return (
        best,
        *(
            jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), 1)
            for a in arrays
        ),
    )


def beam_search(
    initial_logits: jax.Array,
    cache: Cache,
    tokens_to_logits: StepFn,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: EosId = None,
    pad_id: int = 0,
    length_penalty: float = 1.0,
    reorder_cache: Callable[[Cache, jax.Array], Cache] = gather_beams,
) -> BeamSearchResult:
    """Beam search with a length penalty, in a `lax.while_loop`.

    A sequence's score is sum(token log-probabilities) / length**length_penalty, length
    counting EOS; a sequence reaching `max_new_tokens` without EOS is complete too. Each step
    extends the live beams by every token and ranks the extensions; those among the num_beams
    best that end in EOS join the finished set, and the num_beams best that do not stay alive
    (the scheme of transformers). The loop stops early once no live beam can beat the worst
    finished one. With no pruning (enough beams) this is exhaustive search; with one beam and
    length_penalty=0 it is greedy decoding.

    Args:
      initial_logits: [batch, vocab] logits for the first new token.
      cache: decoding state for [batch * num_beams] rows, each example's prompt repeated
        num_beams times: rows b * num_beams ... (b + 1) * num_beams - 1 belong to example b.
      tokens_to_logits: step function on [batch * num_beams] rows.
      num_beams, max_new_tokens: static ints.
      eos_id: token(s) that finish a beam; None makes every beam max_new_tokens long.
      pad_id: token written after EOS.
      length_penalty: alpha of the length normalisation; 0 ranks by summed log-probability.
      reorder_cache: (cache, rows [batch * num_beams]) -> the cache of those rows; the
        default handles pytrees with batch-leading (or scalar) leaves.
    """
    if max_new_tokens < 1 or num_beams < 1:
        raise ValueError(
            f"need max_new_tokens >= 1 and num_beams >= 1, got {max_new_tokens} and {num_beams}"
        )
    batch, vocab = initial_logits.shape
    k, length = num_beams, max_new_tokens
    sequences = jnp.full((batch, k, length), pad_id, jnp.int32)
    logprobs = jnp.zeros((batch, k, length), jnp.float32)
    row_offset = jnp.arange(batch)[:, None] * k  # [batch, 1]

    def choose(state: _BeamState, logits: jax.Array) -> _BeamState:
        token_logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        extended = state.alive_logprob[..., None] + token_logprobs.reshape(batch, k, vocab)
        total, flat = jax.lax.top_k(extended.reshape(batch, k * vocab), 2 * k)  # [batch, 2k]
        parent, tokens = flat // vocab, (flat % vocab).astype(jnp.int32)
        candidate = jnp.take_along_axis(state.alive, parent[..., None], 1)
        candidate = set_column(candidate, state.step, tokens)
        candidate_logprobs = jnp.take_along_axis(state.alive_token_logprobs, parent[..., None], 1)
        parent_logprob = jnp.take_along_axis(state.alive_logprob, parent, 1)
        token_logprob = jnp.where(jnp.isfinite(total), total - parent_logprob, 0.0)
        candidate_logprobs = set_column(candidate_logprobs, state.step, token_logprob)
        ends = is_eos(tokens, eos_id)

        # Only EOS extensions among the num_beams best finish (as in transformers); the rest
        # of the 2 * num_beams refill the live beams.
        in_beam = jnp.arange(2 * k) < k
        score = jnp.where(
            ends & in_beam, total / _length_penalty(state.step + 1, length_penalty), NEG_INF
        )
        finished_score, finished, finished_lengths, finished_token_logprobs = _top(
            jnp.concatenate([state.finished_score, score], 1),
            k,
            jnp.concatenate([state.finished, candidate], 1),
            jnp.concatenate([state.finished_lengths, jnp.full_like(tokens, state.step + 1)], 1),
            jnp.concatenate([state.finished_token_logprobs, candidate_logprobs], 1),
        )
        alive_logprob, alive, alive_token_logprobs, alive_parent = _top(
            jnp.where(ends, NEG_INF, total), k, candidate, candidate_logprobs, parent
        )
        return state.replace(
            parents=(row_offset + alive_parent).reshape(-1),
            alive=alive,
            alive_logprob=alive_logprob,
            alive_token_logprobs=alive_token_logprobs,
            finished=finished,
            finished_score=finished_score,
            finished_lengths=finished_lengths,
            finished_token_logprobs=finished_token_logprobs,
        )

    def body(state: _BeamState) -> _BeamState:
        tokens = jax.lax.dynamic_index_in_dim(state.alive, state.step, 2, keepdims=False)
        cache = reorder_cache(state.cache, state.parents)
        logits, cache = tokens_to_logits(tokens.reshape(-1), cache, state.step)
        return choose(state.replace(step=state.step + 1, cache=cache), logits)

    def not_finished(state: _BeamState) -> jax.Array:
        # Live beams only lose log-probability, so their best reachable score is their current
        # sum over the most favourable length penalty still possible (lengths step + 2 ... T).
        best_alive = jnp.max(state.alive_logprob, axis=1)
        penalties = [_length_penalty(n, length_penalty) for n in (state.step + 2, length)]
        bound = jnp.maximum(best_alive / penalties[0], best_alive / penalties[1])
        beaten = state.finished_score[:, -1] >= bound
        return (state.step < length - 1) & ~jnp.all(beaten | (best_alive == NEG_INF))

    init = _BeamState(
        step=jnp.int32(0),
        cache=cache,
        parents=jnp.arange(batch * k),
        alive=sequences,
        alive_logprob=jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)[None].repeat(batch, 0),
        alive_token_logprobs=logprobs,
        finished=sequences,
        finished_score=jnp.full((batch, k), NEG_INF),
        finished_lengths=jnp.zeros((batch, k), jnp.int32),
        finished_token_logprobs=logprobs,
    )
    state = choose(init, jnp.repeat(initial_logits, k, axis=0))
    state = jax.lax.while_loop(not_finished, body, state)
    # Beams alive at the last position are complete sequences of the maximum length.
    complete = state.step == length - 1
    alive_score = jnp.where(
        complete, state.alive_logprob / _length_penalty(length, length_penalty), NEG_INF
    )
    scores, beams, lengths, beam_logprobs = _top(
        jnp.concatenate([state.finished_score, alive_score], 1),
        k,
        jnp.concatenate([state.finished, state.alive], 1),
        jnp.concatenate([state.finished_lengths, jnp.full((batch, k), length, jnp.int32)], 1),
        jnp.concatenate([state.finished_token_logprobs, state.alive_token_logprobs], 1),
    )
    return BeamSearchResult(
        beams=beams, scores=scores, lengths=lengths, beam_logprobs=beam_logprobs
    )
