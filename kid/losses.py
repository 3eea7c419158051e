"""Token-level divergences between a student and a teacher, computed from logits.

Every public divergence has the signature

    fn(student_logits [B, T, Vs], teacher_logits [B, T, Vt], mask [B, T], *,
       temperature=1.0, vocab_size=None, <method kwargs>) -> (loss_sum, token_count)

with p the teacher distribution and q the student distribution. `loss_sum` is the
f32 sum over positions of mask * (divergence summed over the vocabulary) and
`token_count` is sum(mask); mask may hold float weights (0 for padding). Nothing is
divided here: the step normalises by the global token count, so means over gradient
accumulation and hosts stay unbiased (t5x's weighted-sum convention).

Conventions shared by all of them:
- Vocabulary. A student and teacher of one family can pad their embedding tables
  differently (Qwen2.5-0.5B has 151,936 rows, Qwen2.5-7B 152,064), so both logits are
  sliced to `vocab_size` (the tokenizer's real vocabulary) when given, else to
  min(Vs, Vt), before the softmax.
- Temperature. Both logits are divided by T and the loss is multiplied by T^2
  (Hinton et al. 2015): the gradient of a KL w.r.t. the logits then keeps roughly the
  same magnitude for any T, so the KD weight keeps its meaning next to the
  cross-entropy term. The rationale is the KL's; `t2_scale=False` drops the factor
  (TVD, JSD and ABKD have other gradients). At T = 1 this is a no-op.
- Normalisation. `normalize="token"` (default) returns the token sum and count;
  `"sequence"` returns the sum of per-sequence means and the sequence count, the
  paper's average over |y| per sequence. Both stay (sum, count), so accumulation and
  multi-host means are exact either way.
- Numerics. Logits are cast to float32 and everything stays in log space
  (log_softmax, logaddexp). Vocabulary entries whose logits are -inf for both models
  (a masked entry) contribute exactly 0, and terms p * log(...) use 0 log 0 = 0 with
  the "double where" trick, so no NaN leaks into values or gradients. Padded positions
  (mask 0) are replaced before any arithmetic, so even NaN logits there are harmless.

`DIVERGENCES` maps config names to these functions; `per_token` gives the unreduced
[B, T] values; `cross_entropy` is the SFT / auxiliary MLE term with the same reduction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


# --- Shared input handling ---------------------------------------------------------------


def _shared_vocab(vocab_size: int | None, **sizes: int) -> int:
    """The number of leading vocabulary columns used: vocab_size, else the smallest size."""
    smallest = min(sizes.values())
    if vocab_size is None:
        return smallest
    if not 0 < vocab_size <= smallest:
        named = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise ValueError(f"vocab_size {vocab_size} must be in [1, {smallest}] ({named})")
    return vocab_size


def _check_mask(mask: Array, logits: Array) -> None:
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} != logits shape[:-1] {logits.shape[:-1]}")


def _check_pair(student_logits: Array, teacher_logits: Array) -> None:
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(
            f"student logits {student_logits.shape} and teacher logits "
            f"{teacher_logits.shape} differ before the vocabulary axis"
        )


def _log_probs(
    student_logits: Array, teacher_logits: Array, temperature: float, vocab_size: int | None
) -> tuple[Array, Array, Array]:
    """Tempered f32 log-probabilities on the shared vocabulary.

    Returns (log_q, log_p, live), each [B, T, V]. `live` is False where both models give
    an entry probability 0; there log_q and log_p are set to 0 so that no divergence
    term (nor its gradient) sees -inf - -inf; the caller zeroes those terms.
    """
    _check_pair(student_logits, teacher_logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    v = _shared_vocab(
        vocab_size, student=student_logits.shape[-1], teacher=teacher_logits.shape[-1]
    )
    log_q = jax.nn.log_softmax(student_logits[..., :v].astype(jnp.float32) / temperature)
    log_p = jax.nn.log_softmax(teacher_logits[..., :v].astype(jnp.float32) / temperature)
    live = (log_q > -jnp.inf) | (log_p > -jnp.inf)
    return jnp.where(live, log_q, 0.0), jnp.where(live, log_p, 0.0), live


def _drop_padding(logits: Array, mask: Array) -> Array:
    """Zero the logits [B, T, V] where mask [B, T] is 0, before any arithmetic.

    A padded position may hold anything (NaN from a fully masked attention row, or an
    entry one model rules out), and 0 * NaN in the backward pass would still be NaN;
    replacing its input ("double where") gives it value 0 and gradient 0.
    """
    _check_mask(mask, logits)
    return jnp.where(mask[..., None] != 0, logits, 0)


NORMALIZATIONS = ("token", "sequence")


def _masked_sum(values: Array, mask: Array, normalize: str = "token") -> tuple[Array, Array]:
    """(sum, count) of values [B, T] under mask [B, T], as f32 scalars.

    "token": (sum of mask * values, sum of mask): the step's mean is over every token of
    the batch, so longer sequences weigh more. "sequence": (sum over rows of each row's
    masked mean, number of rows with a token): the step's mean is the paper's per-sequence
    average over |y|. Either way the caller divides the global sum by the global count.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    mask = mask.astype(jnp.float32)
    if normalize == "token":
        return jnp.sum(mask * values), jnp.sum(mask)
    lengths = jnp.sum(mask, axis=-1)
    row_means = jnp.sum(mask * values, axis=-1) / jnp.maximum(lengths, 1e-9)
    return jnp.sum(jnp.where(lengths > 0, row_means, 0.0)), jnp.sum(lengths > 0).astype(jnp.float32)


# --- Elementwise terms: (log_q, log_p) [B, T, V] -> [B, T, V], summed over V later ------


def _xlog(log_a: Array, log_ratio: Array) -> Array:
    """exp(log_a) * log_ratio, with 0 where exp(log_a) = 0 even if log_ratio is infinite."""
    present = log_a > -jnp.inf
    return jnp.where(present, jnp.exp(log_a) * jnp.where(present, log_ratio, 0.0), 0.0)


def _kl(log_a: Array, log_b: Array) -> Array:
    """Terms of KL(a || b) = sum a (log a - log b)."""
    return _xlog(log_a, log_a - log_b)


def _log_mix(log_a: Array, log_b: Array, w: float) -> Array:
    """log(w a + (1 - w) b), as a two-term logsumexp; w = 0 gives log b exactly."""
    return jnp.logaddexp(log_a + jnp.log(jnp.float32(w)), log_b + math.log1p(-w))


def _check_unit(name: str, value: float, *, closed: bool) -> None:
    ok = 0 <= value <= 1 if closed else 0 <= value < 1
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


def _jsd_terms(log_q: Array, log_p: Array, beta: float = 0.5) -> Array:
    _check_unit("beta", beta, closed=True)
    if beta == 0:  # the mixture form is identically 0 at the ends; TRL uses the KLs there
        return _kl(log_p, log_q)
    if beta == 1:
        return _kl(log_q, log_p)
    log_m = _log_mix(log_p, log_q, beta)
    return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)


def _tvd_terms(log_q: Array, log_p: Array) -> Array:
    return 0.5 * jnp.abs(jnp.exp(log_p) - jnp.exp(log_q))


def _skew_fkl_terms(log_q: Array, log_p: Array, lam: float = 0.1) -> Array:
    _check_unit("lam", lam, closed=False)
    return _kl(log_p, _log_mix(log_p, log_q, lam))


def _skew_rkl_terms(log_q: Array, log_p: Array, lam: float = 0.1) -> Array:
    _check_unit("lam", lam, closed=False)
    return _kl(log_q, _log_mix(log_q, log_p, lam))


def _ab_zero_beta(log_a: Array, log_b: Array, alpha: float) -> Array:
    """Terms of D_AB^(alpha, 0)(a || b) = sum(A log(A / B) - A + B) / alpha^2, A = a^alpha."""
    a_pow, b_pow = alpha * log_a, alpha * log_b
    return (_xlog(a_pow, a_pow - b_pow) - jnp.exp(a_pow) + jnp.exp(b_pow)) / alpha**2


def _abkd_terms(log_q: Array, log_p: Array, alpha: float = 0.5, beta: float = 0.5) -> Array:
    """Terms of the alpha-beta divergence D_AB^(alpha, beta)(p || q) (Cichocki et al. 2011).

    Powers are exp(alpha * log p) etc.; the singular (alpha, beta) use the limit forms.
    """
    if alpha == 0 and beta == 0:
        return 0.5 * jnp.square(log_p - log_q)
    if beta == 0:
        return _ab_zero_beta(log_p, log_q, alpha)
    if alpha == 0:
        return _ab_zero_beta(log_q, log_p, beta)
    if alpha + beta == 0:
        log_ratio = alpha * (log_q - log_p)  # log(q^alpha / p^alpha)
        return (log_ratio + jnp.exp(-log_ratio) - 1) / alpha**2
    s = alpha + beta
    mixed = jnp.exp(alpha * log_p + beta * log_q)  # p^alpha q^beta
    own = alpha / s * jnp.exp(s * log_p) + beta / s * jnp.exp(s * log_q)
    return (own - mixed) / (alpha * beta)


_TERMS: dict[str, Callable[..., Array]] = {
    "fkl": lambda log_q, log_p: _kl(log_p, log_q),
    "rkl": lambda log_q, log_p: _kl(log_q, log_p),
    "jsd": _jsd_terms,
    "tvd": _tvd_terms,
    "skew_fkl": _skew_fkl_terms,
    "skew_rkl": _skew_rkl_terms,
    "abkd": _abkd_terms,
}


# --- Public API --------------------------------------------------------------------------


def per_token(
    name: str,
    student_logits: Array,
    teacher_logits: Array,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    t2_scale: bool = True,
    **kwargs: float,
) -> Array:
    """Divergence `name` at every position, summed over the vocabulary, times T^2.

    Args:
      name: a key of DIVERGENCES.
      student_logits: [B, T, Vs]; teacher_logits: [B, T, Vt].
      t2_scale: multiply by T^2 (Hinton's rescaling, derived for the KL's gradient); False
        leaves the tempered divergence as it is (e.g. TVD, bounded by 1 at any T).
      kwargs: the divergence's own static hyperparameters (beta, lam, alpha).

    Returns:
      [B, T] float32.
    """
    if name not in _TERMS:
        raise ValueError(f"unknown divergence {name!r}; known: {sorted(_TERMS)}")
    log_q, log_p, live = _log_probs(student_logits, teacher_logits, temperature, vocab_size)
    terms = jnp.where(live, _TERMS[name](log_q, log_p, **kwargs), 0.0)
    scale = temperature**2 if t2_scale else 1.0
    return scale * jnp.sum(terms, axis=-1)


def _reduce(
    name: str,
    student_logits: Array,
    teacher_logits: Array,
    mask: Array,
    normalize: str = "token",
    **kwargs,
) -> tuple[Array, Array]:
    _check_pair(student_logits, teacher_logits)
    student_logits = _drop_padding(student_logits, mask)
    teacher_logits = _drop_padding(teacher_logits, mask)
    values = per_token(name, student_logits, teacher_logits, **kwargs)
    return _masked_sum(values, mask, normalize)


def _divergence(name: str, doc: str) -> Callable[..., tuple[Array, Array]]:
    """The public reduction of divergence ``name``: (loss_sum, token_count) of [B, T]."""

    def divergence(
        student_logits: Array,
        teacher_logits: Array,
        mask: Array,
        *,
        temperature: float = 1.0,
        vocab_size: int | None = None,
        t2_scale: bool = True,
        normalize: str = "token",
        **options: float,
    ) -> tuple[Array, Array]:
        return _reduce(
            name,
            student_logits,
            teacher_logits,
            mask,
            normalize,
            temperature=temperature,
            vocab_size=vocab_size,
            t2_scale=t2_scale,
            **options,
        )

    divergence.__name__ = divergence.__qualname__ = name
    divergence.__doc__ = doc
    return divergence


fkl = _divergence("fkl", "Forward KL(p || q) = sum p (log p - log q): mass-covering (FKD, ImitKD).")
rkl = _divergence(
    "rkl", "Reverse KL(q || p) = sum q (log q - log p): mode-seeking (RKD, KID, GKD)."
)
jsd = _divergence(
    "jsd",
    """Generalised Jensen-Shannon divergence in TRL's convention; option beta=0.5.

    M = beta p + (1 - beta) q and jsd = beta KL(p || M) + (1 - beta) KL(q || M).
    beta = 0 is fkl and beta = 1 is rkl (special-cased, as in TRL, since the mixture
    form is 0 there); EasyDeL uses the reverse convention. beta must be in [0, 1].
    """,
)
tvd = _divergence("tvd", "Total variation 0.5 sum |p - q| (f-distill); in [0, 1] per token.")
skew_fkl = _divergence(
    "skew_fkl",
    """Skew forward KL(p || lam p + (1 - lam) q) (DistiLLM, Ko et al. 2024); option lam=0.1.

    Mixing p into the second argument keeps the log-ratio bounded where q is tiny.
    lam = 0 is fkl exactly; lam must be in [0, 1).
    """,
)
skew_rkl = _divergence(
    "skew_rkl",
    "Skew reverse KL(q || lam q + (1 - lam) p) (DistiLLM); option lam=0.1; lam = 0 is rkl.",
)
abkd = _divergence(
    "abkd",
    """Alpha-beta divergence D_AB^(alpha, beta)(p || q) of ABKD (Wang et al., ICML 2025);
    options alpha=0.5, beta=0.5.

    D_AB = -1/(alpha beta) sum(p^alpha q^beta - alpha/(alpha+beta) p^(alpha+beta)
    - beta/(alpha+beta) q^(alpha+beta)), with Cichocki et al.'s limit forms where
    alpha, beta or alpha + beta is 0. (1, 0) is fkl and (0, 1) is rkl; the default
    (0.5, 0.5) is 2 sum (sqrt p - sqrt q)^2, a scaled squared Hellinger distance.
    An extension beyond the KID paper, which uses only the KLs, JSD and TVD.
    """,
)


DIVERGENCES: dict[str, Callable[..., tuple[Array, Array]]] = {
    "fkl": fkl,
    "rkl": rkl,
    "jsd": jsd,
    "tvd": tvd,
    "skew_fkl": skew_fkl,
    "skew_rkl": skew_rkl,
    "abkd": abkd,
}


def cross_entropy(
    logits: Array,
    targets: Array,
    mask: Array,
    *,
    vocab_size: int | None = None,
    normalize: str = "token",
) -> tuple[Array, Array]:
    """Token cross-entropy -log softmax(logits)[target], reduced like the divergences.

    Args:
      logits: [B, T, V], sliced to `vocab_size` when given.
      targets: [B, T] int, each < the (sliced) vocabulary size.
      mask: [B, T] weights, 0 for padding.
      normalize: "token" or "sequence" (`_masked_sum`).

    Returns:
      (loss_sum, token_count), f32 scalars.
    """
    logits = _drop_padding(logits, mask)
    if targets.shape != mask.shape:
        raise ValueError(f"targets shape {targets.shape} != mask shape {mask.shape}")
    v = _shared_vocab(vocab_size, logits=logits.shape[-1])
    log_probs = jax.nn.log_softmax(logits[..., :v].astype(jnp.float32))
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return _masked_sum(nll, mask, normalize)


def token_entropy(logits: Array) -> Array:
    """[B, T] entropy (nats) of softmax(logits) [B, T, V], in float32; an id whose logit
    is -inf (banned) has probability 0 and adds 0 log 0 = 0."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(_xlog(log_p, log_p), axis=-1)


def entropy(
    logits: Array, mask: Array, *, vocab_size: int | None = None, normalize: str = "token"
) -> tuple[Array, Array]:
    """(summed entropy, count) of logits [B, T, V] under mask [B, T], sliced to
    `vocab_size`: how sure a model is (a teacher near 0 nats carries little more than the
    gold label)."""
    logits = _drop_padding(logits, mask)
    v = _shared_vocab(vocab_size, logits=logits.shape[-1])
    return _masked_sum(token_entropy(logits[..., :v]), mask, normalize)
