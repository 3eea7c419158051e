"""Exposure bias as ExAccErr (Arora et al. 2022, as reported by MiniLLM and KID).

A student trained on gold (or teacher) prefixes decodes on its own. Its error then compounds
along its own samples faster than along the teacher's. ExAccErr measures that excess:

    R(l)   = E_{y ~ student}[ sum_{t < l} KL_t(y) ]
    eps(l) = E_{y ~ teacher}[ sum_{t < l} KL_t(y) ]
    ExAccErr(l) = (R(l) - eps(l)) / eps(l) * 100

KL_t(y) = KL(teacher(. | x, y_<t) || student(. | x, y_<t)) is computed exactly over the
vocabulary (`kid.losses.per_token("fkl", ...)`) at the sampled prefix, not estimated from the
sampled token. Both policies sample at temperature 1, the distributions the KL compares.
KL_0 sees only the prompt, so R(1) = eps(1) and ExAccErr(1) = 0: the curve is read at l > 1.

Choices made here:
- A row that ends (emits EOS) before l contributes its KL summed over its own positions, the
  EOS position included, and 0 after: the sequence is complete, so no further error can
  accumulate. So R(l) = E_y[ sum_{t < min(l, len(y))} KL_t(y) ], and R is non-decreasing in l.
- A row that reaches `max_new_tokens` without EOS is cut there; R(l) for l <= max_new_tokens
  is unaffected, so horizons beyond it are refused.
- R = eps = 0 (a student equal to its teacher) gives ExAccErr 0, not NaN; eps = 0 < R gives
  inf.
- Rows of weight 0 (batch padding) do not count, even if their logits are NaN.

The driver `exposure_bias_curve` is model-agnostic: it takes a sampler per policy
(rng -> `kid.decoding.Decoded`) and a scorer (decoded -> teacher and student logits at every
decoded position), so a bigram pair sampled with `kid.decoding.sample`, e.g.

    sample = lambda rng: decoding.sample(table[starts], (), bigram_step, max_new_tokens=L,
                                         select=decoding.sampler("sample"), rng=rng, eos_id=1)

and a pair of kid models (`exposure_bias`) run the same code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kid import decoding, losses
from kid.data import batching
from kid.models import forward as fwd

# rng -> N continuations sampled by one policy (tokens [N, L], lengths [N]).
SampleFn = Callable[[jax.Array], decoding.Decoded]
# continuations -> (teacher logits, student logits) [N, L, V], predicting each decoded token.
ScoreFn = Callable[[fwd.Continuations], tuple[jax.Array, jax.Array]]


def _check_horizons(horizons: Sequence[int], length: int) -> None:
    if not horizons or any(not 1 <= h <= length for h in horizons):
        raise ValueError(f"horizons must be non-empty, each in [1, {length}], got {horizons}")


def accumulated_kl(
    teacher_logits: jax.Array,
    student_logits: jax.Array,
    lengths: jax.Array,
    *,
    horizons: Sequence[int],
    weights: jax.Array | None = None,
    vocab_size: int | None = None,
) -> jax.Array:
    """Weighted mean over rows of the KL(teacher || student) accumulated up to each horizon.

    Args:
      teacher_logits: [N, L, Vt], student_logits: [N, L, Vs], the logits at each position of N
        sequences given their own prefixes; positions at and after `lengths` are ignored.
      lengths: [N] int, tokens per row (the ending EOS included).
      horizons: static ints l in [1, L]; a row counts its first min(l, length) positions.
      weights: [N] row weights (probabilities, or 0 for padding rows); None: uniform.
      vocab_size: the shared vocabulary the KL runs over (see `kid.losses`).

    Returns:
      [len(horizons)] float32: sum_n w_n sum_{t < min(l, len_n)} KL_{n,t} / sum_n w_n.
    """
    n, length = teacher_logits.shape[:2]
    _check_horizons(horizons, length)
    kl = losses.per_token("fkl", student_logits, teacher_logits, vocab_size=vocab_size)  # [N, L]
    real = jnp.arange(length)[None, :] < lengths[:, None]
    totals = jnp.cumsum(jnp.where(real, kl, 0.0), axis=1)[:, jnp.asarray(horizons) - 1]  # [N, H]
    weights = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
    counted = weights[:, None] > 0  # a weight-0 row may hold NaN, and 0 * NaN is NaN
    return jnp.sum(jnp.where(counted, weights[:, None] * totals, 0.0), 0) / jnp.sum(weights)


def exacc_err(r: jax.Array, eps: jax.Array) -> jax.Array:
    """(R - eps) / eps * 100, elementwise; 0 where R = eps = 0, inf where eps = 0 < R."""
    r, eps = jnp.asarray(r, jnp.float32), jnp.asarray(eps, jnp.float32)
    ratio = (r - eps) / jnp.where(eps > 0, eps, 1.0) * 100
    return jnp.where(eps > 0, ratio, jnp.where(r > 0, jnp.inf, 0.0))


def sampled_accumulated_kl(
    sample_fn: SampleFn,
    score_fn: ScoreFn,
    rng: jax.Array,
    *,
    horizons: Sequence[int],
    weights: jax.Array | None = None,
    vocab_size: int | None = None,
) -> jax.Array:
    """[len(horizons)] Monte Carlo accumulated KL over the sequences `sample_fn(rng)` draws:
    R(l) when it samples the student, eps(l) when it samples the teacher."""
    decoded = sample_fn(rng)
    teacher_logits, student_logits = score_fn(decoded)
    return accumulated_kl(
        teacher_logits,
        student_logits,
        decoded.lengths,
        horizons=horizons,
        weights=weights,
        vocab_size=vocab_size,
    )


def exposure_bias_curve(
    sample_student: SampleFn,
    sample_teacher: SampleFn,
    score_fn: ScoreFn,
    rng: jax.Array,
    *,
    horizons: Sequence[int],
    weights: jax.Array | None = None,
    vocab_size: int | None = None,
) -> dict[str, jax.Array]:
    """{"R", "eps", "exacc_err"}: [len(horizons)] each, for any pair of policies.

    `weights` [N] weigh the rows of both samplers' outputs (they sample the same N contexts).
    The student samples with the first key of `jax.random.split(rng)`, the teacher with the
    second (the tests reproduce the samples from this).
    """
    student_rng, teacher_rng = jax.random.split(rng)
    accumulate = functools.partial(
        sampled_accumulated_kl, horizons=horizons, weights=weights, vocab_size=vocab_size
    )
    r = accumulate(sample_student, score_fn, student_rng)
    eps = accumulate(sample_teacher, score_fn, teacher_rng)
    return {"R": r, "eps": eps, "exacc_err": exacc_err(r, eps)}


@functools.partial(
    jax.jit,
    static_argnames=(
        "student",
        "teacher",
        "horizons",
        "num_samples",
        "max_new_tokens",
        "eos_id",
        "pad_id",
        "vocab_size",
    ),
)
def _model_curve(
    student: nn.Module,
    student_variables: fwd.Variables,
    teacher: nn.Module,
    teacher_variables: fwd.Variables,
    batch: fwd.Batch,
    rng: jax.Array,
    *,
    horizons: tuple[int, ...],
    num_samples: int,
    max_new_tokens: int,
    eos_id: tuple[int, ...] | None,
    pad_id: int,
    vocab_size: int | None,
) -> dict[str, jax.Array]:
    """`exposure_bias_curve` of two kid models on every prompt of `batch`, num_samples each."""
    # [B * num_samples, ...]: rows b * num_samples ... (b + 1) * num_samples - 1 are example b.
    repeated = jax.tree.map(lambda x: jnp.repeat(x, num_samples, axis=0), batch)
    prompt_ids, prompt_mask = batching.prompt_arrays(repeated)

    def sampler_of(module: nn.Module, variables: fwd.Variables) -> SampleFn:
        return lambda key: decoding.generate(
            module,
            variables,
            prompt_ids,
            prompt_mask,
            max_new_tokens=max_new_tokens,
            method="sample",
            rng=key,
            eos_id=eos_id,
            pad_id=pad_id,
            vocab_size=vocab_size,
        )

    def score(decoded):
        continued = fwd.continuation_batch(repeated, decoded, pad_id=pad_id)
        return (
            fwd.forward(teacher, teacher_variables, continued),
            fwd.forward(student, student_variables, continued),
        )

    return exposure_bias_curve(
        sampler_of(student, student_variables),
        sampler_of(teacher, teacher_variables),
        score,
        rng,
        horizons=horizons,
        weights=repeated["weights"],
        vocab_size=vocab_size,
    )


def exposure_bias(
    student: nn.Module,
    student_variables: fwd.Variables,
    teacher: nn.Module,
    teacher_variables: fwd.Variables,
    batch: fwd.Batch,
    rng: jax.Array,
    *,
    horizons: Sequence[int],
    num_samples: int,
    max_new_tokens: int,
    eos_id: decoding.EosId,
    pad_id: int,
    vocab_size: int | None = None,
) -> dict[str, list[float]]:
    """ExAccErr of a student against its teacher (same family) on the prompts of `batch`.

    Each prompt gets `num_samples` continuations of up to `max_new_tokens` tokens sampled at
    temperature 1 from the student (for R) and from the teacher (for eps); both models score
    every continuation with `kid.models.forward`. One compiled function per shape: the
    logits are [B * num_samples, max_new_tokens, V] per model, so size B * num_samples to fit.

    Args:
      batch: a `kid.data.batching` batch; its gold targets are unused, its weight-0
        (padding) rows do not count.
      horizons: ints l in [1, max_new_tokens].
      eos_id, pad_id: stop token(s) and the pad written after them.
      vocab_size: the tokenizer's vocabulary (the KL runs over it); None: the smaller table.

    Returns:
      {"horizons", "R", "eps", "exacc_err"}: lists of Python numbers, one per horizon.
    """
    horizons = tuple(int(h) for h in horizons)
    _check_horizons(horizons, max_new_tokens)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    curve = _model_curve(
        student,
        student_variables,
        teacher,
        teacher_variables,
        dict(batch),
        rng,
        horizons=horizons,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        eos_id=None if eos_id is None else tuple(int(i) for i in np.ravel(eos_id)),
        pad_id=pad_id,
        vocab_size=vocab_size,
    )
    return {"horizons": list(horizons), **{k: jax.device_get(v).tolist() for k, v in curve.items()}}
