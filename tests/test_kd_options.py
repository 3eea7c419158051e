"""The study's KD options against numpy: per-sequence normalisation, the optional T^2 factor,
entropy, and the teacher's wiring checks inside a method's metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_fixtures import EOS, FAMILIES, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid import losses, methods
from kid.models import forward as fwd

B, T, V = 3, 6, 9
VOCAB = 128
TEACHER = {
    "t5": dict(d_model=48, d_ff=64, num_decoder_layers=2, vocab_size=136),
    "decoder": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, vocab_size=136),
}


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(B, T, V)) * 2
    teacher = rng.normal(size=(B, T, V)) * 3
    # Rows of different lengths (one empty): per-token and per-sequence means differ.
    mask = np.zeros((B, T), np.float32)
    mask[0, :6] = 1
    mask[1, :2] = 1
    return student, teacher, mask


def np_rkl(student, teacher, temperature=1.0):
    log_q = np_log_softmax(student / temperature)
    log_p = np_log_softmax(teacher / temperature)
    return np.sum(np.exp(log_q) * (log_q - log_p), -1)  # [B, T]


def test_sequence_normalisation_is_the_mean_of_per_sequence_means(logits):
    student, teacher, mask = logits
    per_token = np_rkl(student, teacher)
    rows = [per_token[b, mask[b] > 0].mean() for b in range(B) if mask[b].sum() > 0]
    total, count = losses.rkl(
        jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask), normalize="sequence"
    )
    assert float(count) == 2  # the empty row counts for nothing
    np.testing.assert_allclose(float(total) / float(count), np.mean(rows), rtol=1e-5)
    total, count = losses.rkl(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask))
    np.testing.assert_allclose(float(total) / float(count), per_token[mask > 0].mean(), rtol=1e-5)
    assert abs(np.mean(rows) - per_token[mask > 0].mean()) > 1e-3  # the two really differ


def test_sequence_normalised_cross_entropy(logits):
    student, _, mask = logits
    targets = np.arange(B * T).reshape(B, T) % V
    nll = -np.take_along_axis(np_log_softmax(student), targets[..., None], -1)[..., 0]
    expected = np.mean([nll[b, mask[b] > 0].mean() for b in range(2)])
    total, count = losses.cross_entropy(
        jnp.asarray(student), jnp.asarray(targets), jnp.asarray(mask), normalize="sequence"
    )
    np.testing.assert_allclose(float(total) / float(count), expected, rtol=1e-5)


def test_t2_scale_is_optional(logits):
    student, teacher, mask = logits
    expected = np_rkl(student, teacher, temperature=2.0)[mask > 0].sum()
    args = (jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask))
    scaled, _ = losses.rkl(*args, temperature=2.0)
    plain, _ = losses.rkl(*args, temperature=2.0, t2_scale=False)
    np.testing.assert_allclose(float(scaled), 4 * expected, rtol=1e-5)
    np.testing.assert_allclose(float(plain), expected, rtol=1e-5)


def test_unknown_normalisation_is_refused(logits):
    student, teacher, mask = logits
    with pytest.raises(ValueError, match="normalize"):
        losses.fkl(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask), normalize="row")


def test_entropy_against_numpy(logits):
    _, teacher, mask = logits
    log_p = np_log_softmax(teacher[..., :7])
    expected = -np.sum(np.exp(log_p) * log_p, -1)[mask > 0].sum()
    total, count = losses.entropy(jnp.asarray(teacher), jnp.asarray(mask), vocab_size=7)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert float(count) == mask.sum()


def _pair(family):
    student = tiny_module(family)
    teacher = tiny_module(family, **TEACHER[family])
    prompts, targets = random_rows(3, batch=3, max_target=6)
    batch = make_batch(family, prompts, targets, target_len=8)
    return student, teacher, tiny_variables(student, seed=1), tiny_variables(teacher, seed=2), batch


@pytest.mark.parametrize("family", FAMILIES)
def test_methods_log_the_teachers_gold_ce_agreement_and_entropy(family):
    """RKD on gold through the jitted method: the teacher terms equal numpy's CE, argmax
    agreement and entropy of the teacher's own logits at the gold positions, and weigh
    nothing in the loss. A teacher shifted by one position would not match."""
    student, teacher, student_vars, teacher_vars, batch = _pair(family)
    cfg = methods.KDConfig(
        method="rkd", student=student, teacher=teacher, vocab_size=VOCAB, pad_id=PAD, eos_id=EOS
    )
    fn = jax.jit(methods.loss_fn(cfg))
    loss, metrics = fn(
        student_vars["params"], {"student": {}, "teacher": teacher_vars}, batch, jax.random.key(0)
    )
    logits = np.asarray(fwd.forward(teacher, teacher_vars, batch), np.float64)[..., :VOCAB]
    targets, mask = (np.asarray(x) for x in fwd.targets_and_mask(batch))
    real = mask > 0
    log_p = np_log_softmax(logits)
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(metrics["teacher_ce"]), nll[real].mean(), rtol=1e-4)
    agree = (logits.argmax(-1) == targets)[real].mean()
    np.testing.assert_allclose(float(metrics["teacher_agree"]), agree, rtol=1e-6)
    entropy = -np.sum(np.exp(log_p) * log_p, -1)[real].mean()
    np.testing.assert_allclose(float(metrics["teacher_entropy"]), entropy, rtol=1e-4)
    np.testing.assert_allclose(
        float(loss), float(metrics["kd"]) + float(metrics["ce"]), rtol=1e-5
    )  # weight-0 terms add nothing


def test_config_refuses_unknown_normalisation():
    with pytest.raises(ValueError, match="normalize"):
        methods.KDConfig(method="sft", student=tiny_module("t5"), normalize="batch")
