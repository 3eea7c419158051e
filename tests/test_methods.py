"""kid.methods: every KD method against a plain, non-jitted recomputation, one optimizer step
per method for a T5 pair and a decoder-only pair, gradients only into the trainable
collection, and the configuration checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from kd_fixtures import EOS, FAMILIES, PAD, make_batch, random_rows, tiny_module, tiny_variables
from model_helpers import jitted_apply

from kid import methods, models

MASK = 127
VOCAB = 128  # the tokenizer's vocabulary; the teacher pads its table to 136 rows
NEW = 6  # max_new_tokens of on-policy sampling
TEACHER = {
    "t5": dict(d_model=48, d_ff=64, num_decoder_layers=2, vocab_size=136),
    "decoder": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, vocab_size=136),
}
GREEDY = 1e-6  # a sampling temperature at which sampling is argmax (no near-ties here)


@dataclasses.dataclass
class Pair:
    family: str
    student: object
    teacher: object
    student_vars: dict
    teacher_vars: dict
    prompts: list
    targets: list
    batch: dict

    def cfg(self, method, **kw):
        options = dict(
            method=method,
            student=self.student,
            teacher=self.teacher,
            vocab_size=VOCAB,
            pad_id=PAD,
            eos_id=EOS,
            mask_id=MASK,
            max_new_tokens=NEW,
        )
        return methods.KDConfig(**{**options, **kw})

    def frozen(self):
        return {"student": {}, "teacher": self.teacher_vars}

    def loss(self, cfg, *, step=0, rng=0):
        fn = jax.jit(methods.loss_fn(cfg), static_argnames="step")
        return fn(
            self.student_vars["params"], self.frozen(), self.batch, jax.random.key(rng), step=step
        )


def make_pair(family: str) -> Pair:
    student = tiny_module(family)
    teacher = tiny_module(family, **TEACHER[family])
    prompts, targets = random_rows(7, batch=3, max_target=6)
    batch = make_batch(family, prompts, targets, target_len=8)
    return Pair(
        family,
        student,
        teacher,
        tiny_variables(student, seed=1),
        tiny_variables(teacher, seed=2),
        prompts,
        targets,
        batch,
    )


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    return make_pair(request.param)


# ----------------------------------------------------------------------------------------------
# An independent reference: full (uncached) forwards, numpy float64 divergences.


def ref_logits(module, variables, family, prompts, rows, width):
    """[B, width, V] float64 logits predicting each target token, plus the [B, width] mask,
    from a plain full apply on a batch built from scratch."""
    batch = make_batch(family, prompts, rows, target_len=width)
    apply = jitted_apply(module)
    if family == "t5":
        logits = apply(
            variables,
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch["decoder_attention_mask"],
        )
        mask = batch["decoder_attention_mask"]
    else:
        logits = apply(variables, batch["input_ids"], batch["attention_mask"])
        p = batch["prompt_ids"].shape[1]
        logits, mask = logits[:, p - 1 : p + width - 1], batch["attention_mask"][:, p:]
    return np.asarray(logits, np.float64)[..., :VOCAB], np.asarray(mask, np.float64)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ref_divergence(name, student, teacher, mask, *, lam=0.1, alpha=0.5, beta=0.5):
    """Token mean of a divergence of p (teacher) and q (student) from its definition."""
    log_q, log_p = log_softmax(student), log_softmax(teacher)
    q, p = np.exp(log_q), np.exp(log_p)
    if name == "skew_rkl":  # KL(q || lam q + (1 - lam) p)
        per_token = (q * (log_q - np.log(lam * q + (1 - lam) * p))).sum(-1)
    elif name == "abkd":  # D_AB^(alpha, beta)(p || q), alpha, beta, alpha + beta != 0
        s = alpha + beta
        mixed = p**alpha * q**beta - alpha / s * p**s - beta / s * q**s
        per_token = -mixed.sum(-1) / (alpha * beta)
    else:
        per_token = {
            "fkl": (p * (log_p - log_q)).sum(-1),
            "rkl": (q * (log_q - log_p)).sum(-1),
            "tvd": 0.5 * np.abs(p - q).sum(-1),
        }[name]
    return (per_token * mask).sum() / mask.sum()


def ref_ce(logits, rows, mask):
    log_q = log_softmax(logits)
    total = 0.0
    for i, row in enumerate(rows):
        total += -sum(log_q[i, t, tok] for t, tok in enumerate(row))
    return total / mask.sum()


def ref_greedy(module, variables, family, prompts, width=NEW):
    """Greedy continuations by repeated full forwards (stop at EOS, at most ``width``)."""
    rows = [[] for _ in prompts]
    for _ in range(width):
        open_rows = [i for i, r in enumerate(rows) if not (r and r[-1] == EOS)]
        if not open_rows:
            break
        extended = [np.array(r + [0], np.int64) for r in rows]  # the next position's logits
        logits, _ = ref_logits(module, variables, family, prompts, extended, width + 1)
        for i in open_rows:
            rows[i].append(int(logits[i, len(rows[i])].argmax()))
    return [np.array(r) for r in rows]


def ref_distill(pair, name, rows, *, with_ce):
    s, mask = ref_logits(pair.student, pair.student_vars, pair.family, pair.prompts, rows, 8)
    t, _ = ref_logits(pair.teacher, pair.teacher_vars, pair.family, pair.prompts, rows, 8)
    loss = ref_divergence(name, s, t, mask)
    if with_ce:
        g, gold_mask = ref_logits(
            pair.student, pair.student_vars, pair.family, pair.prompts, pair.targets, 8
        )
        loss += ref_ce(g, pair.targets, gold_mask)
    return loss


# ----------------------------------------------------------------------------------------------


def _reference(pair, method, options):
    """The loss of a method recomputed from full forwards and numpy divergences."""
    student_greedy = lambda: ref_greedy(pair.student, pair.student_vars, pair.family, pair.prompts)  # noqa: E731
    teacher_greedy = lambda: ref_greedy(pair.teacher, pair.teacher_vars, pair.family, pair.prompts)  # noqa: E731
    if method == "sft":
        return ref_gold_ce(pair)
    if method == "seqkd":
        rows = teacher_greedy()
        s, mask = ref_logits(pair.student, pair.student_vars, pair.family, pair.prompts, rows, NEW)
        return ref_ce(s, rows, mask)
    if method in ("skew_rkl", "abkd"):
        s, mask = ref_logits(
            pair.student, pair.student_vars, pair.family, pair.prompts, pair.targets, 8
        )
        t, _ = ref_logits(
            pair.teacher, pair.teacher_vars, pair.family, pair.prompts, pair.targets, 8
        )
        if method == "skew_rkl":
            kwargs = dict(lam=options["skew_lambda"])
        else:
            kwargs = dict(alpha=options["ab_alpha"], beta=options["ab_beta"])
        return ref_gold_ce(pair) + ref_divergence(method, s, t, mask, **kwargs)
    if method in ("kid", "kid_cascade"):
        return ref_distill(
            pair, "rkl", _ref_rewrite(pair, cascade=method == "kid_cascade"), with_ce=True
        )
    sources = {
        "fkd": ("fkl", "gold"),
        "rkd": ("rkl", "gold"),
        "gkd": (
            options.get("divergence", "rkl"),
            "student" if options.get("on_policy_fraction") else "gold",
        ),
        "imitkd": ("fkl", "gold"),  # step 0: the gold probability is 1
        "fdistill": ("tvd", "student" if options.get("student_fraction") else "teacher"),
        "skd": ("fkl", "student"),  # top-K = V: the teacher accepts every proposal
    }
    name, source = sources[method]
    rows = {"gold": lambda: pair.targets, "student": student_greedy, "teacher": teacher_greedy}[
        source
    ]()
    return ref_distill(pair, name, rows, with_ce=source == "gold")


def ref_gold_ce(pair):
    g, mask = ref_logits(
        pair.student, pair.student_vars, pair.family, pair.prompts, pair.targets, 8
    )
    return ref_ce(g, pair.targets, mask)


def _ref_uniform_positions(targets, width, alpha=0.5):
    """[B, width] bool: uniform masking of each row's tokens before its EOS (the targets
    here end in their only EOS): k = max(1, round(alpha n)) of the n, at the centred,
    evenly spaced ordinals ceil((j + 1/2) n / k) - 1, j < k."""
    selected = np.zeros((len(targets), width), bool)
    for i, row in enumerate(targets):
        n = list(row).index(EOS)
        k = max(1, round(alpha * n))
        selected[i, [-(-(2 * j + 1) * n // (2 * k)) - 1 for j in range(k)]] = True
    return selected


def _ref_rewrite(pair, *, cascade):
    """y_hat for uniform masking at alpha 0.5 with argmax fills (never the mask token nor
    PAD), filled in parallel (every masked position sees the mask token) or left to right
    (cascade)."""
    width = 8
    gold = np.zeros((3, width), np.int64)
    for i, row in enumerate(pair.targets):
        gold[i, : len(row)] = row
    selected = _ref_uniform_positions(pair.targets, width)

    def argmax_given(tokens):
        rows = [tokens[i, : len(r)] for i, r in enumerate(pair.targets)]
        logits, _ = ref_logits(
            pair.student, pair.student_vars, pair.family, pair.prompts, rows, width
        )
        logits[..., [MASK, PAD]] = -np.inf
        return logits.argmax(-1)

    if not cascade:
        current = np.where(selected, argmax_given(np.where(selected, MASK, gold)), gold)
    else:
        current = gold.copy()
        for col in range(width):
            if selected[:, col].any():
                current[:, col] = np.where(
                    selected[:, col], argmax_given(current)[:, col], current[:, col]
                )
    y_hat = [current[i, : len(r)] for i, r in enumerate(pair.targets)]
    assert any(not np.array_equal(a, b) for a, b in zip(y_hat, pair.targets, strict=True))
    return y_hat


# Every registered method, with options that make its sequences deterministic where the
# method samples (sampling at a vanishing temperature is argmax), so a plain recomputation
# can follow it; the gkd / fdistill branches are each taken once.
CASES = [
    ("sft", {}),
    ("fkd", {}),
    ("rkd", {}),
    ("skew_rkl", dict(skew_lambda=0.3)),
    ("abkd", dict(ab_alpha=0.7, ab_beta=0.4)),
    ("kid", dict(alpha=0.5, strategy="uniform")),
    ("kid_cascade", dict(alpha=0.5, strategy="uniform")),
    ("gkd", dict(on_policy_fraction=1.0)),
    ("gkd", dict(on_policy_fraction=0.0, divergence="fkl")),
    ("imitkd", dict(imitkd_decay_steps=10)),
    ("fdistill", dict(student_fraction=1.0)),
    ("fdistill", dict(student_fraction=0.0)),
    ("seqkd", {}),
    ("skd", dict(skd_top_k=VOCAB)),
]
assert {m for m, _ in CASES} == set(methods.REGISTRY)


@pytest.mark.parametrize(
    "method, options", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)]
)
def test_method_loss_and_one_jitted_optimizer_step(pair, method, options):
    """The jitted step's loss equals the plain recomputation; the step updates the student."""
    teacher = None if method == "sft" else pair.teacher
    cfg = pair.cfg(method, teacher=teacher, sample_temperature=GREEDY, **options)
    trainable = pair.student_vars["params"]
    new, loss, metrics, grads = _one_step(pair, cfg, trainable, pair.frozen())
    np.testing.assert_allclose(loss, _reference(pair, method, options), rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    norm = float(optax.tree.norm(grads))
    assert np.isfinite(norm) and norm > 0
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), trainable, new)
    assert any(jax.tree.leaves(changed))


def test_kid_rewrite_takes_the_tokenizer_ids(pair):
    """The rewrite bans the configured pad id (and the mask token) from its fills."""
    for pad in (PAD, 5):
        spec = pair.cfg("kid_cascade", pad_id=pad).imperfection(cascade=True)
        assert (spec.mask_id, spec.eos_ids, spec.pad_id) == (MASK, (EOS,), pad)
        assert set(spec.banned_ids) == {MASK, pad} and spec.vocab_size == VOCAB


def test_kid_with_alpha_zero_is_exactly_rkd(pair):
    kid, _ = pair.loss(pair.cfg("kid", alpha=0.0))
    rkd, _ = pair.loss(pair.cfg("rkd"))
    assert float(kid) == float(rkd)


def test_imitkd_moves_to_student_samples_as_steps_pass(pair):
    cfg = pair.cfg("imitkd", imitkd_decay_steps=10, sample_temperature=GREEDY)
    loss, metrics = pair.loss(cfg, step=10)
    assert float(metrics["on_policy"]) == 1.0
    rows = ref_greedy(pair.student, pair.student_vars, pair.family, pair.prompts)
    np.testing.assert_allclose(loss, ref_distill(pair, "fkl", rows, with_ce=False), rtol=1e-5)


def test_gkd_mixes_on_and_off_policy_batches(pair):
    cfg = pair.cfg("gkd", on_policy_fraction=0.5)
    fn = jax.jit(methods.loss_fn(cfg))
    keys = [jax.random.key(i) for i in range(12)]
    flags = [
        float(fn(pair.student_vars["params"], pair.frozen(), pair.batch, k)[1]["on_policy"])
        for k in keys
    ]
    assert 0 < sum(flags) < 12


def _one_step(pair, cfg, trainable, frozen):
    fn = methods.loss_fn(cfg)
    optimizer = optax.adamw(1e-2)

    @jax.jit
    def step(trainable, opt_state, frozen, batch, rng):
        (loss, metrics), grads = jax.value_and_grad(fn, has_aux=True)(trainable, frozen, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss, metrics, grads

    new, _, loss, metrics, grads = step(
        trainable, optimizer.init(trainable), frozen, pair.batch, jax.random.key(0)
    )
    return new, loss, metrics, grads


@pytest.mark.parametrize("method", ["kid", "skd"])
def test_lora_gradients_reach_only_the_adapters(pair, method):
    lora = models.LoRAConfig(rank=2, targets=("q", "v", "q_proj", "v_proj"))
    student = models.with_lora(pair.student, lora)
    adapters = models.init(student, jax.random.key(0), collection="lora")
    adapters = jax.tree.map(lambda x: x + 0.1, adapters)  # B != 0, so the base matters
    cfg = dataclasses.replace(
        pair.cfg(method, sample_temperature=1.0), student=student, trainable="lora"
    )
    frozen = {"student": {"params": pair.student_vars["params"]}, "teacher": pair.teacher_vars}
    fn = methods.loss_fn(cfg)
    grads = jax.jit(
        jax.grad(lambda t, f: fn(t, f, pair.batch, jax.random.key(0))[0], argnums=(0, 1))
    )(adapters, frozen)
    adapter_grads, frozen_grads = grads
    assert float(optax.tree.norm(adapter_grads)) > 0
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(frozen_grads))


# ----------------------------------------------------------------------------------------------
# Configuration checks: fail at start, naming the field.


def test_mismatched_families_fail_at_start():
    with pytest.raises(ValueError, match="teacher is encoder-decoder .* student is decoder-only"):
        methods.KDConfig(method="rkd", student=tiny_module("decoder"), teacher=tiny_module("t5"))


def test_bad_configs_name_the_field(pair):
    cases = [
        (dict(method="nope"), "method 'nope'"),
        (dict(method="rkd", teacher=None), "needs a teacher"),
        (dict(method="kid", mask_id=None), "needs mask_id"),
        (dict(method="kid", alpha=2.0), "alpha"),
        (dict(method="rkd", divergence="jsd"), "fixes its divergence"),
        (dict(method="gkd", divergence="kl"), "divergence 'kl'"),
        (dict(method="gkd", on_policy_fraction=1.5), "on_policy_fraction"),
        (dict(method="rkd", vocab_size=200), "exceeds the student's 128"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            pair.cfg(**overrides)
