"""Jitted autoregressive decoding: sampling, beam search, forced and teacher-guided decoding.

Evaluation decodes every dev example at every checkpoint, and the on-policy KD methods (GKD,
ImitKD, f-distill, SKD) and KID's cascade rewrite decode inside training steps. So decoding is
one compiled XLA loop over a KV cache, with no host callbacks and no Python branching on traced
values: it runs inside an outer `jax.jit` under a mesh.

The core functions are model-agnostic, in the style of t5x's `decoding.py`. They take the logits
for the first new token, a cache pytree, and a step function

    tokens_to_logits(tokens, cache, step) -> (logits, cache)

that feeds `tokens` [batch] (the token chosen at `step`, counted from 0 over the new tokens) to
the model and returns the logits [batch, vocab] for the token at `step + 1`. For example, a
bigram model with a constant "cache":

    table = jnp.log(jnp.array([[0.1, 0.9], [0.8, 0.2]]))   # [vocab, vocab]
    step = lambda tokens, cache, i: (table[tokens], cache)
    out = sample(table[jnp.array([0])], (), step, max_new_tokens=3)
    out.tokens  # [[1, 0, 1]]

Rows finish independently: once a row emits `eos_id` (one token or several), the following
positions hold `pad_id` and log-probability 0, and the loop exits early when every row has
finished. A `select` may hold a row open: under forced decoding a row ends at EOS only at or
after its last forced position, so every forced token is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from kid.data import batching

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


def _is_eos(tokens: jax.Array, eos_id: EosId) -> jax.Array:
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


def _set_column(buffer: jax.Array, step: jax.Array, values: jax.Array) -> jax.Array:
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
        ends = _is_eos(tokens, eos_id) & values.get(MAY_END, True)
        return state.replace(
            done=state.done | ends,
            lengths=state.lengths + (~state.done).astype(jnp.int32),
            tokens=_set_column(state.tokens, state.step, tokens),
            values={
                name: _set_column(buffer, state.step, jnp.where(state.done, 0, values[name]))
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
        candidate = _set_column(candidate, state.step, tokens)
        candidate_logprobs = jnp.take_along_axis(state.alive_token_logprobs, parent[..., None], 1)
        parent_logprob = jnp.take_along_axis(state.alive_logprob, parent, 1)
        token_logprob = jnp.where(jnp.isfinite(total), total - parent_logprob, 0.0)
        candidate_logprobs = _set_column(candidate_logprobs, state.step, token_logprob)
        ends = _is_eos(tokens, eos_id)

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
