"""Every KD method as one pure, jittable loss function (CONTRACT 8).

    loss_fn(trainable, frozen, batch, rng, cfg, *, step=0) -> (loss, metrics)

- trainable: the student's "params" (full fine-tuning) or its "lora" adapters; the only
  argument differentiated.
- frozen: {"student": the student's other collections, "teacher": the teacher's variables}.
  The teacher is an argument, never closed over, passed through stop_gradient, never in
  the optimizer state.
- batch: a ``kid.data.batching`` batch of the student's layout (targets are gold SQL).
- cfg: a ``KDConfig`` (static: modules and options); step: the optimizer step, read by
  methods with schedules (ImitKD).

Each loss term is a per-token mean over the tokens it is computed on (a sum divided by
the global token count: inside a jitted step over global arrays the sums are global);
``metrics`` carries every term's mean and its (sum, tokens, weight) parts (``combine``), so
gradient accumulation can normalise once over micro-batches. Methods that train on gold add the same auxiliary
cross-entropy on gold, ``ce_weight * CE(y)``, to ``kd_weight * D(student, teacher)``.
On-policy sequences are sampled inside the step with ``kid.decoding`` (temperature
``sample_temperature``, ``max_new_tokens`` tokens). Forwards run under ``jax.named_call``
("student", "teacher", "predict"; decoding under "rollout") so a profile separates them.
The equations and passes of each method are in docs/ARCHITECTURE.md, "KD methods".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kid import decoding, imperfect, losses
from kid.data import batching
from kid.models import forward as fwd
from kid.models.build import is_encoder_decoder

Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]

# The divergence each method uses unless the config names another (only the methods in
# CONFIGURABLE_DIVERGENCE accept one).
DEFAULT_DIVERGENCE = {
    "fkd": "fkl",
    "rkd": "rkl",
    "skew_rkl": "skew_rkl",
    "abkd": "abkd",
    "fdistill": "tvd",
    "imitkd": "fkl",
    "gkd": "rkl",
    "kid": "rkl",
    "kid_cascade": "rkl",
    "skd": "fkl",
}
CONFIGURABLE_DIVERGENCE = ("gkd", "kid", "kid_cascade", "skd")


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """Static configuration of a method's loss (built once from the config file).

    Attributes:
      method: a REGISTRY name.
      student, teacher: kid.models modules of the same family (teacher None for sft).
      trainable: "params" or "lora", the collection the optimizer updates.
      vocab_size: the tokenizer's vocabulary (len(tokenizer)); logits of both models are
        sliced to it, so differently padded embedding tables compare correctly.
      pad_id, eos_id, mask_id: the tokenizer's special ids (mask_id for KID).
      temperature: distillation temperature.
      t2_scale: multiply the divergence by T^2 (Hinton's rescaling of the KL's gradient).
      normalize: "token" (each term's global sum over its global token count, so longer
        SQL weighs more) or "sequence" (the mean over sequences of each one's average over
        |y|, the paper's); for the divergence and the CE alike.
      kd_weight, ce_weight: weights of the divergence and of the auxiliary CE on gold.
      divergence: "" for the method's default, else a kid.losses.DIVERGENCES name.
      jsd_beta, skew_lambda, ab_alpha, ab_beta: divergence options.
      alpha, strategy, fill: KID's masking fraction, strategy and fill (kid.imperfect).
      on_policy_fraction: GKD's lambda, the probability that a batch is student-sampled.
      student_fraction: f-distill's probability of student- (else teacher-) sampled data.
      imitkd_decay_steps: ImitKD's gold probability decays linearly 1 -> 0 over these.
      skd_top_k: SKD's teacher top-K acceptance set.
      max_new_tokens, sample_temperature: on-policy sampling.
      dropout: run the differentiated student forward with dropout (needs its rng).
    """

    method: str
    student: nn.Module
    teacher: nn.Module | None = None
    trainable: str = "params"
    vocab_size: int | None = None
    pad_id: int = 0
    eos_id: int | tuple[int, ...] = 1
    mask_id: int | None = None
    temperature: float = 1.0
    t2_scale: bool = True
    normalize: str = "token"
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    divergence: str = ""
    jsd_beta: float = 0.5
    skew_lambda: float = 0.1
    ab_alpha: float = 0.5
    ab_beta: float = 0.5
    alpha: float = 0.2
    strategy: str = "random"
    fill: str = "argmax"
    on_policy_fraction: float = 0.5
    student_fraction: float = 0.5
    imitkd_decay_steps: int = 1000
    skd_top_k: int = 25
    max_new_tokens: int = 128
    sample_temperature: float = 1.0
    dropout: bool = False

    def __post_init__(self):
        check_config(self)

    @property
    def divergence_name(self) -> str:
        return self.divergence or DEFAULT_DIVERGENCE[self.method]

    def divergence_options(self) -> dict[str, float]:
        name = self.divergence_name
        return {
            "jsd": {"beta": self.jsd_beta},
            "skew_fkl": {"lam": self.skew_lambda},
            "skew_rkl": {"lam": self.skew_lambda},
            "abkd": {"alpha": self.ab_alpha, "beta": self.ab_beta},
        }.get(name, {})

    def imperfection(self, cascade: bool) -> imperfect.Imperfection:
        return imperfect.Imperfection(
            mask_id=self.mask_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            alpha=self.alpha,
            strategy=self.strategy,
            fill=self.fill,
            cascade=cascade,
            vocab_size=self.vocab_size,
        )


def check_config(cfg: KDConfig) -> None:
    """Refuses, naming the field, a configuration that would give wrong numbers."""
    if cfg.method not in REGISTRY:
        raise ValueError(f"method {cfg.method!r} is not one of {sorted(REGISTRY)}")
    if cfg.trainable not in fwd.COLLECTIONS:
        raise ValueError(f"trainable must be one of {fwd.COLLECTIONS}, got {cfg.trainable!r}")
    if cfg.method != "sft":
        if cfg.teacher is None:
            raise ValueError(f"method {cfg.method!r} needs a teacher")
        if is_encoder_decoder(cfg.student) != is_encoder_decoder(cfg.teacher):
            family = {True: "encoder-decoder (T5)", False: "decoder-only"}
            raise ValueError(
                f"teacher is {family[is_encoder_decoder(cfg.teacher)]} but student is "
                f"{family[is_encoder_decoder(cfg.student)]}: KD needs one family and tokenizer"
            )
    for name, module in {"student": cfg.student, "teacher": cfg.teacher}.items():
        rows = None if module is None else module.config.vocab_size
        if rows is not None and cfg.vocab_size is not None and cfg.vocab_size > rows:
            raise ValueError(
                f"vocab_size {cfg.vocab_size} (the tokenizer's) exceeds the {name}'s "
                f"{rows} embedding rows"
            )
    if cfg.divergence:
        if cfg.divergence not in losses.DIVERGENCES:
            raise ValueError(
                f"divergence {cfg.divergence!r} is not one of {sorted(losses.DIVERGENCES)}"
            )
        if cfg.method not in CONFIGURABLE_DIVERGENCE:
            raise ValueError(
                f"method {cfg.method!r} fixes its divergence; divergence={cfg.divergence!r} "
                f"applies to {CONFIGURABLE_DIVERGENCE}"
            )
    if cfg.method in ("kid", "kid_cascade"):
        if cfg.mask_id is None:
            raise ValueError(f"method {cfg.method!r} needs mask_id (the tokenizer's mask token)")
        cfg.imperfection(cascade=False)  # validates alpha, strategy, fill
    if cfg.normalize not in losses.NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {losses.NORMALIZATIONS}, got {cfg.normalize!r}")
    for name in ("on_policy_fraction", "student_fraction"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.max_new_tokens < 1 or cfg.imitkd_decay_steps < 1 or cfg.skd_top_k < 1:
        raise ValueError("max_new_tokens, imitkd_decay_steps and skd_top_k must be >= 1")


# ----------------------------------------------------------------------------------------------
# Passes and terms.


def student_variables(trainable: Any, frozen: dict, cfg: KDConfig) -> dict:
    """The student's variables: the trainable collection joined with its frozen ones (the
    base model under LoRA), which get no gradient."""
    return fwd.join_variables(trainable, jax.lax.stop_gradient(frozen["student"]), cfg.trainable)


def _student_logits(variables: dict, batch: fwd.Batch, rng: jax.Array, cfg: KDConfig):
    """The differentiated student forward: [B, T, V] target logits."""
    rngs = {"dropout": rng} if cfg.dropout else None
    return jax.named_call(fwd.forward, name="student")(
        cfg.student, variables, batch, deterministic=not cfg.dropout, rngs=rngs
    )


def _teacher_logits(frozen: dict, batch: fwd.Batch, cfg: KDConfig):
    teacher = jax.lax.stop_gradient(frozen["teacher"])
    return jax.named_call(fwd.forward, name="teacher")(cfg.teacher, teacher, batch)


def _mean(total: jax.Array, count: jax.Array) -> jax.Array:
    return total / jnp.maximum(count, 1.0)


Term = tuple[float | jax.Array, jax.Array, jax.Array]  # (weight, loss sum, token count)


def combine(**terms: Term) -> tuple[jax.Array, Metrics]:
    """loss = sum of weight * sum / count over the named terms; metrics hold each term's
    per-token mean (``name``) and its parts (``name/sum``, ``name/tokens``, ``name/weight``).

    The parts let a step that accumulates gradients over micro-batches add sums and token
    counts separately and normalise once, which equals the loss of the whole batch
    (``kid.train``); a mean of per-micro-batch means does not.
    """
    loss, metrics = 0.0, {}
    for name, (weight, total, count) in terms.items():
        mean = _mean(total, count)
        loss = loss + weight * mean
        metrics[name] = mean
        metrics[f"{name}/sum"] = total
        metrics[f"{name}/tokens"] = jnp.asarray(count, jnp.float32)
        metrics[f"{name}/weight"] = jnp.asarray(weight, jnp.float32)
    return jnp.asarray(loss, jnp.float32), metrics


def cross_entropy(
    logits: jax.Array, batch: fwd.Batch, cfg: KDConfig
) -> tuple[jax.Array, jax.Array]:
    """(summed cross-entropy, token count) of target logits [B, T, V] on the batch's targets."""
    targets, mask = fwd.targets_and_mask(batch)
    return losses.cross_entropy(
        logits, targets, mask, vocab_size=cfg.vocab_size, normalize=cfg.normalize
    )


def divergence(student_logits, teacher_logits, batch: fwd.Batch, cfg: KDConfig) -> tuple:
    """(summed divergence, token count): the config's divergence between student and
    teacher on a batch."""
    _, mask = fwd.targets_and_mask(batch)
    fn = losses.DIVERGENCES[cfg.divergence_name]
    return fn(
        student_logits,
        teacher_logits,
        mask,
        temperature=cfg.temperature,
        vocab_size=cfg.vocab_size,
        t2_scale=cfg.t2_scale,
        normalize=cfg.normalize,
        **cfg.divergence_options(),
    )


def teacher_terms(teacher_logits, batch: fwd.Batch, gold: fwd.Batch, cfg: KDConfig) -> dict:
    """Weight-0 terms that check the wiring at the positions the KD term uses: the
    teacher's CE on the gold tokens there, its argmax agreement with them and its entropy.

    A teacher fed another layout or misaligned by one position shows a large CE and a low
    agreement at once; a near-zero entropy says it carries little beyond the gold label.
    ``gold`` has the batch's target shape (gold itself, or the batch when it has no gold).
    """
    _, mask = fwd.targets_and_mask(batch)
    targets, _ = fwd.targets_and_mask(gold)
    v = cfg.vocab_size or teacher_logits.shape[-1]
    agree = (jnp.argmax(teacher_logits[..., :v], axis=-1) == targets).astype(jnp.float32)
    real = mask.astype(jnp.float32)
    return {
        "teacher_ce": (0.0, *losses.cross_entropy(teacher_logits, targets, mask, vocab_size=v)),
        "teacher_agree": (0.0, jnp.sum(agree * real), jnp.sum(real)),
        "teacher_entropy": (0.0, *losses.entropy(teacher_logits, mask, vocab_size=v)),
    }


def _distill(variables, frozen, batch, rng, cfg: KDConfig, gold: fwd.Batch | None) -> tuple:
    """kd_weight * D(student || teacher) on ``batch`` (+ ce_weight * CE on ``gold``), with the
    teacher's wiring checks (``teacher_terms``)."""
    student = _student_logits(variables, batch, rng, cfg)
    teacher = _teacher_logits(frozen, batch, cfg)
    kd = divergence(student, teacher, batch, cfg)
    checks = teacher_terms(teacher, batch, batch if gold is None else gold, cfg)
    if gold is None:
        zero = jnp.zeros_like(kd[0])
        return combine(kd=(cfg.kd_weight, *kd), ce=(cfg.ce_weight, zero, zero), **checks)
    gold_student = student if gold is batch else _student_logits(variables, gold, rng, cfg)
    ce = cross_entropy(gold_student, gold, cfg)
    return combine(kd=(cfg.kd_weight, *kd), ce=(cfg.ce_weight, *ce), **checks)


def _continuations(module, variables, batch, rng, cfg: KDConfig, method: str) -> fwd.Batch:
    """A model's continuations of the batch's prompts ("sample" or "greedy") as a batch."""
    decoded = jax.named_call(decoding.generate, name="rollout")(
        module,
        variables,
        *batching.prompt_arrays(batch),
        max_new_tokens=cfg.max_new_tokens,
        method=method,
        rng=rng,
        temperature=cfg.sample_temperature,
        eos_id=cfg.eos_id,
        pad_id=cfg.pad_id,
        vocab_size=cfg.vocab_size,
    )
    return fwd.continuation_batch(batch, decoded, pad_id=cfg.pad_id)


def student_samples(variables, batch, rng, cfg: KDConfig) -> fwd.Batch:
    """The student's own continuations of the prompts (temperature sampling)."""
    return _continuations(cfg.student, variables, batch, rng, cfg, "sample")


def teacher_samples(frozen, batch, rng, cfg: KDConfig, *, greedy: bool = False) -> fwd.Batch:
    """The teacher's continuations of the prompts (sampled, or greedy for SeqKD)."""
    method = "greedy" if greedy else "sample"
    return _continuations(cfg.teacher, frozen["teacher"], batch, rng, cfg, method)


# ----------------------------------------------------------------------------------------------
# The methods.


def sft(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """SFT: CE(y) on gold."""
    del step
    variables = student_variables(trainable, frozen, cfg)
    return combine(
        ce=(1.0, *cross_entropy(_student_logits(variables, batch, rng, cfg), batch, cfg))
    )


def token_kd(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """FKD / RKD / skew-RKL / ABKD: D(student, teacher) on gold y, + CE(y)."""
    del step
    variables = student_variables(trainable, frozen, cfg)
    return _distill(variables, frozen, batch, rng, cfg, gold=batch)


def kid(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0, cascade: bool = False):
    """KID: rkl(student, teacher) on the imperfect rewrite y_hat of gold, + CE(y).

    y_hat: mask alpha of the gold target tokens, predict them with the student (frozen for
    this pass), splice the predictions in (``kid.imperfect``).
    """
    del step
    rewrite_rng, dropout_rng = jax.random.split(rng)
    variables = student_variables(trainable, frozen, cfg)
    rewritten, selected = imperfect.imperfect_batch(
        cfg.student,
        jax.lax.stop_gradient(variables),
        batch,
        rewrite_rng,
        cfg.imperfection(cascade),
    )
    # With alpha = 0 the rewrite is the gold batch itself, so one student forward serves
    # both terms and the loss is exactly RKD's.
    loss, metrics = _distill(variables, frozen, rewritten, dropout_rng, cfg, gold=batch)
    targets, real = fwd.target_tokens(batch)
    new_targets, _ = fwd.target_tokens(rewritten)
    changed = jnp.sum(selected & (new_targets != targets))
    metrics = {
        **metrics,
        "masked_fraction": jnp.sum(selected) / jnp.maximum(jnp.sum(real), 1),
        "changed_fraction": changed / jnp.maximum(jnp.sum(selected), 1),
    }
    return loss, metrics


def kid_cascade(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """KID with the cascade rewrite: masked positions filled left to right."""
    return kid(trainable, frozen, batch, rng, cfg, step=step, cascade=True)


# Where a mixed method's sequences come from: (variables, frozen, batch, rng, cfg) ->
# (the sequences D is computed on, the gold batch for the auxiliary CE or None).
def _gold_sequences(variables, frozen, batch, rng, cfg):
    del variables, frozen, rng, cfg
    return batch, batch


def _student_sequences(variables, frozen, batch, rng, cfg):
    del frozen
    return student_samples(jax.lax.stop_gradient(variables), batch, rng, cfg), None


def _teacher_sequences(variables, frozen, batch, rng, cfg):
    del variables
    return teacher_samples(frozen, batch, rng, cfg), None


def _mixture(trainable, frozen, batch, rng, cfg: KDConfig, first_prob, first, second, flag: str):
    """D on the sequences of source ``first`` with probability ``first_prob``, else of
    ``second``, drawn once per batch; only the drawn branch runs (lax.cond). metrics[flag] is
    1.0 when the batch took ``first``."""
    coin_rng, sample_rng, dropout_rng = jax.random.split(rng, 3)
    variables = student_variables(trainable, frozen, cfg)

    def branch(source):
        def run():
            sequences, gold = source(variables, frozen, batch, sample_rng, cfg)
            return _distill(variables, frozen, sequences, dropout_rng, cfg, gold=gold)

        return run

    use_first = jax.random.uniform(coin_rng) < first_prob
    loss, metrics = jax.lax.cond(use_first, branch(first), branch(second))
    return loss, {**metrics, flag: use_first.astype(jnp.float32)}


def gkd(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """GKD (Agarwal et al. 2024): with probability lambda (per batch, as TRL) the batch is the
    student's samples, else gold; divergence rkl by default (fkl / jsd(beta) configurable)."""
    del step
    return _mixture(
        trainable,
        frozen,
        batch,
        rng,
        cfg,
        cfg.on_policy_fraction,
        _student_sequences,
        _gold_sequences,
        "on_policy",
    )


def imitkd(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """ImitKD (Lin et al. 2020): fkl on gold with probability beta_i = max(0, 1 - i / decay),
    else on the student's samples; the oracle's share decays as the student improves."""
    gold_prob = jnp.maximum(0.0, 1.0 - jnp.asarray(step, jnp.float32) / cfg.imitkd_decay_steps)
    return _mixture(
        trainable,
        frozen,
        batch,
        rng,
        cfg,
        1.0 - gold_prob,
        _student_sequences,
        _gold_sequences,
        "on_policy",
    )


def fdistill(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """f-distill (Wen et al. 2023), TVD variant: tvd on the student's samples with probability
    ``student_fraction``, else on the teacher's samples (no gold)."""
    del step
    return _mixture(
        trainable,
        frozen,
        batch,
        rng,
        cfg,
        cfg.student_fraction,
        _student_sequences,
        _teacher_sequences,
        "student_sampled",
    )


def seqkd(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """SeqKD (Kim & Rush 2016): CE on the teacher's greedy sequences, generated in the step
    (as TRL's seq_kd) in place of gold."""
    del step
    sample_rng, dropout_rng = jax.random.split(rng)
    variables = student_variables(trainable, frozen, cfg)
    samples = teacher_samples(frozen, batch, sample_rng, cfg, greedy=True)
    logits = _student_logits(variables, samples, dropout_rng, cfg)
    return combine(ce=(1.0, *cross_entropy(logits, samples, cfg)))


def skd(trainable, frozen, batch, rng, cfg: KDConfig, *, step=0):
    """SKD (Xu et al. 2024): the student samples, the teacher replaces proposals outside its
    top-K (``kid.decoding.generate_guided``); the divergence (fkl by default) on them."""
    del step
    sample_rng, dropout_rng = jax.random.split(rng)
    variables = student_variables(trainable, frozen, cfg)
    decoded = jax.named_call(decoding.generate_guided, name="rollout")(
        cfg.student,
        jax.lax.stop_gradient(variables),
        cfg.teacher,
        jax.lax.stop_gradient(frozen["teacher"]),
        *batching.prompt_arrays(batch),
        teacher_top_k=cfg.skd_top_k,
        max_new_tokens=cfg.max_new_tokens,
        rng=sample_rng,
        temperature=cfg.sample_temperature,
        eos_id=cfg.eos_id,
        pad_id=cfg.pad_id,
        vocab_size=cfg.vocab_size,
    )
    samples = fwd.continuation_batch(batch, decoded, pad_id=cfg.pad_id)
    loss, metrics = _distill(variables, frozen, samples, dropout_rng, cfg, gold=None)
    replaced = jnp.sum(decoded.replaced) / jnp.maximum(jnp.sum(decoded.lengths), 1)
    return loss, {**metrics, "replaced_fraction": replaced}


REGISTRY: dict[str, LossFn] = {
    "sft": sft,
    "fkd": token_kd,
    "rkd": token_kd,
    "skew_rkl": token_kd,
    "abkd": token_kd,
    "fdistill": fdistill,
    "imitkd": imitkd,
    "gkd": gkd,
    "seqkd": seqkd,
    "kid": kid,
    "kid_cascade": kid_cascade,
    "skd": skd,
}


def loss_fn(cfg: KDConfig) -> Callable[..., tuple[jax.Array, Metrics]]:
    """The configured method's loss, ``(trainable, frozen, batch, rng, *, step=0)``."""
    method = REGISTRY[cfg.method]

    def bound(trainable, frozen, batch, rng, *, step=0):
        return method(trainable, frozen, batch, rng, cfg, step=step)

    return bound
