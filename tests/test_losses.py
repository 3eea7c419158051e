"""kid.losses against independent float64 numpy definitions, plus properties and numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kid import losses

B, T, V = 2, 5, 11

# (name, kwargs): every divergence at its defaults plus the interesting hyperparameters.
CASES = [
    ("fkl", {}),
    ("rkl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.2}),
    ("tvd", {}),
    ("skew_fkl", {}),
    ("skew_rkl", {"lam": 0.3}),
    ("abkd", {}),
    ("abkd", {"alpha": 0.2, "beta": 0.7}),
    ("abkd", {"alpha": 1.5, "beta": -0.5}),
    ("abkd", {"alpha": 0.3, "beta": 0.0}),
    ("abkd", {"alpha": 0.0, "beta": 0.4}),
    ("abkd", {"alpha": 0.6, "beta": -0.6}),
    ("abkd", {"alpha": 0.0, "beta": 0.0}),
]
CASE_IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items()) or 'default'}" for n, kw in CASES]
NAMES = list(losses.DIVERGENCES)


# --- numpy float64 reference, written from the definitions -------------------------------


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(a, b):
    return np.sum(a * (np.log(a) - np.log(b)), -1)


def np_ab(p, q, alpha, beta):
    if alpha == 0 and beta == 0:
        return 0.5 * np.sum((np.log(p) - np.log(q)) ** 2, -1)
    if beta == 0:
        pa, qa = p**alpha, q**alpha
        return np.sum(pa * np.log(pa / qa) - pa + qa, -1) / alpha**2
    if alpha == 0:
        return np_ab(q, p, beta, 0.0)
    if alpha + beta == 0:
        r = q**alpha / p**alpha
        return np.sum(np.log(r) + 1 / r - 1, -1) / alpha**2
    s = alpha + beta
    return -np.sum(p**alpha * q**beta - alpha / s * p**s - beta / s * q**s, -1) / (alpha * beta)


def np_divergence(name, p, q, beta=0.5, lam=0.1, alpha=0.5):
    """Per-token [B, T] divergence of p (teacher) and q (student) [B, T, V]."""
    if name == "fkl":
        return np_kl(p, q)
    if name == "rkl":
        return np_kl(q, p)
    if name == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)
    if name == "tvd":
        return 0.5 * np.abs(p - q).sum(-1)
    if name == "skew_fkl":
        return np_kl(p, lam * p + (1 - lam) * q)
    if name == "skew_rkl":
        return np_kl(q, lam * q + (1 - lam) * p)
    if name == "abkd":
        return np_ab(p, q, alpha, beta)
    raise KeyError(name)


def np_reference(name, s, t, mask, temperature=1.0, vocab_size=None, **kw):
    v = vocab_size or min(s.shape[-1], t.shape[-1])
    q = np_softmax(np.float64(s[..., :v]) / temperature)
    p = np_softmax(np.float64(t[..., :v]) / temperature)
    per_tok = temperature**2 * np_divergence(name, p, q, **kw)
    return np.sum(mask * per_tok), np.sum(mask)


def random_inputs(seed=0, vs=V, vt=V, scale=2.0):
    rng = np.random.default_rng(seed)
    s = (scale * rng.standard_normal((B, T, vs))).astype(np.float32)
    t = (scale * rng.standard_normal((B, T, vt))).astype(np.float32)
    mask = (rng.random((B, T)) < 0.7).astype(np.float32)
    return s, t, mask


def call(name, s, t, mask, **kw):
    return losses.DIVERGENCES[name](jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), **kw)


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "temperature, extra_teacher_cols, vocab_size",
    [(1.0, 0, None), (2.0, 3, None), (0.5, 3, 9)],
)
@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_matches_numpy(name, kw, temperature, extra_teacher_cols, vocab_size):
    s, t, mask = random_inputs(vt=V + extra_teacher_cols)
    opts = dict(temperature=temperature, vocab_size=vocab_size, **kw)
    loss_sum, count = call(name, s, t, mask, **opts)
    want_sum, want_count = np_reference(name, s, t, mask, **opts)
    assert loss_sum.dtype == jnp.float32 and loss_sum.shape == ()
    np.testing.assert_allclose(loss_sum, want_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(count, want_count)


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_zero_for_identical_and_nonnegative(name, kw):
    s, t, mask = random_inputs(seed=1)
    same, _ = call(name, s, s, mask, **kw)
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
    per_tok = losses.per_token(name, jnp.asarray(s), jnp.asarray(t), **kw)
    assert per_tok.shape == (B, T)
    assert np.all(np.asarray(per_tok) >= -1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_per_token_reduces_to_loss_sum(name):
    s, t, mask = random_inputs(seed=2)
    mask = mask * 0.5  # float weights
    per_tok = losses.per_token(name, jnp.asarray(s), jnp.asarray(t), temperature=2.0)
    loss_sum, count = call(name, s, t, mask, temperature=2.0)
    np.testing.assert_allclose(loss_sum, np.sum(mask * per_tok), rtol=1e-6)
    np.testing.assert_allclose(count, mask.sum())


def test_jsd_special_cases():
    s, t, mask = random_inputs(seed=3)
    np.testing.assert_allclose(call("jsd", s, t, mask, beta=0.0), call("fkl", s, t, mask))
    np.testing.assert_allclose(call("jsd", s, t, mask, beta=1.0), call("rkl", s, t, mask))
    p, q = np_softmax(np.float64(t)), np_softmax(np.float64(s))
    m = (p + q) / 2
    symmetric = np.sum(mask * (0.5 * np_kl(p, m) + 0.5 * np_kl(q, m)))
    np.testing.assert_allclose(call("jsd", s, t, mask, beta=0.5)[0], symmetric, rtol=1e-5)


def test_skew_and_abkd_reduce_to_kl():
    s, t, mask = random_inputs(seed=4)
    fwd, rev = call("fkl", s, t, mask)[0], call("rkl", s, t, mask)[0]
    np.testing.assert_allclose(call("skew_fkl", s, t, mask, lam=0.0)[0], fwd, rtol=1e-6)
    np.testing.assert_allclose(call("skew_rkl", s, t, mask, lam=0.0)[0], rev, rtol=1e-6)
    np.testing.assert_allclose(call("abkd", s, t, mask, alpha=1.0, beta=0.0)[0], fwd, rtol=1e-5)
    np.testing.assert_allclose(call("abkd", s, t, mask, alpha=0.0, beta=1.0)[0], rev, rtol=1e-5)


@pytest.mark.parametrize(
    "limit, near",
    [((0.4, 0.0), (0.4, 1e-3)), ((0.0, 0.4), (1e-3, 0.4)), ((0.5, -0.5), (0.5, -0.499))],
)
def test_abkd_limit_forms_are_continuous(limit, near):
    """The singular-case formulas are the limits of the general one (checks the limits)."""
    s, t, mask = random_inputs(seed=5)
    at = call("abkd", s, t, mask, alpha=limit[0], beta=limit[1])[0]
    close = call("abkd", s, t, mask, alpha=near[0], beta=near[1])[0]
    np.testing.assert_allclose(at, close, rtol=1e-2)


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(6)
    logits = (3 * rng.standard_normal((B, T, V + 2))).astype(np.float32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = (rng.random((B, T)) < 0.7).astype(np.float32)
    loss_sum, count = losses.cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), vocab_size=V
    )
    log_probs = np.log(np_softmax(np.float64(logits[..., :V])))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss_sum, np.sum(mask * nll), rtol=1e-5)
    np.testing.assert_allclose(count, mask.sum())


# --- numerics ------------------------------------------------------------------------------


def grads(name, s, t, mask, **kw):
    loss = lambda s, t: losses.DIVERGENCES[name](s, t, mask, **kw)[0]  # noqa: E731
    return jax.grad(loss, argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_finite_gradients_for_huge_logits(name, kw):
    if name == "abkd" and kw.get("alpha", 0.5) * kw.get("beta", 0.5) < 0:
        pytest.skip("negative alpha * beta weighs ratios p/q, unbounded for 1e4 logits")
    s, t, mask = random_inputs(seed=7, scale=1e4)
    loss_sum, _ = call(name, s, t, mask, **kw)
    assert np.isfinite(loss_sum)
    for g in grads(name, s, t, mask, **kw):
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_masked_vocab_entries_are_ignored(name, kw):
    """-inf in both logits equals dropping the column; values and gradients stay finite."""
    s, t, mask = random_inputs(seed=8)
    keep = [i for i in range(V) if i not in (2, 7)]
    s_inf, t_inf = s.copy(), t.copy()
    s_inf[..., [2, 7]] = -np.inf
    t_inf[..., [2, 7]] = -np.inf
    t_inf[0, 0, 4] = -np.inf  # an entry only the teacher rules out (padded position)
    mask[0, 0] = 0.0
    got, _ = call(name, s_inf, t_inf, mask, **kw)
    want, _ = call(name, s[..., keep], t[..., keep], mask, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for g in grads(name, s_inf, t_inf, mask, **kw):
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name", ["fkl", "jsd", "tvd", "skew_fkl", "skew_rkl", "abkd"])
def test_teacher_zero_probability_is_finite(name):
    """Divergences finite when p = 0 < q (all but rkl) give finite values and gradients."""
    s, t, mask = random_inputs(seed=9)
    t[..., 3] = -np.inf
    assert np.isfinite(call(name, s, t, mask)[0])
    for g in grads(name, s, t, mask):
        assert np.all(np.isfinite(g))


def bf16_inputs(seed):
    """bf16 logits and their exact float64 values (bf16 -> f64 is exact), and the mask."""
    s, t, mask = random_inputs(seed=seed)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    return s16, t16, np.asarray(s16, np.float64), np.asarray(t16, np.float64), mask


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_bf16_logits_are_computed_in_f32(name, kw):
    """bf16 logits give the value of their numbers computed in float32: float64 numpy on
    the same numbers within f32 accuracy (bf16 arithmetic is off by ~1e-2, see below)."""
    s16, t16, s64, t64, mask = bf16_inputs(seed=10)
    opts = dict(temperature=2.0, **kw)
    loss_sum, _ = call(name, s16, t16, mask, **opts)
    want_sum, _ = np_reference(name, s64, t64, mask, **opts)
    np.testing.assert_allclose(loss_sum, want_sum, rtol=1e-5, atol=1e-5)


def test_bf16_arithmetic_would_fail_the_f32_check():
    """The check above can fail: fkl carried out in bf16 (log_softmax, products and the sum
    over the vocabulary) misses the float64 value by far more than its tolerance. And the
    cross-entropy of bf16 logits is float32 too."""
    s16, t16, s64, t64, mask = bf16_inputs(seed=10)
    want, _ = np_reference("fkl", s64, t64, mask)
    log_q, log_p = jax.nn.log_softmax(s16), jax.nn.log_softmax(t16)
    per_token = jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)
    in_bf16 = float(jnp.sum(jnp.asarray(mask, jnp.bfloat16) * per_token))
    assert abs(in_bf16 - want) > 100 * (1e-5 * abs(want) + 1e-5)
    targets = np.argmax(t64, -1)
    got, _ = losses.cross_entropy(s16, jnp.asarray(targets), jnp.asarray(mask))
    log_probs = np.log(np_softmax(s64))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, np.sum(mask * nll), rtol=1e-5)


JIT_KWARGS = {
    "jsd": {"beta": 0.3},
    "skew_fkl": {"lam": 0.2},
    "skew_rkl": {"lam": 0.2},
    "abkd": {"alpha": 0.3, "beta": 0.6},
}


@pytest.mark.parametrize("name", NAMES)
def test_jit(name):
    s, t, mask = random_inputs(seed=11, vt=V + 3)
    opts = dict(temperature=2.0, vocab_size=10, **JIT_KWARGS.get(name, {}))
    fn = losses.DIVERGENCES[name]
    jitted = jax.jit(fn, static_argnames=tuple(opts))(s, t, mask, **opts)
    np.testing.assert_allclose(jitted, fn(s, t, mask, **opts), rtol=1e-6)


# --- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("jsd", {"beta": -0.1}, "beta"),
        ("jsd", {"beta": 1.1}, "beta"),
        ("skew_fkl", {"lam": -0.1}, "lam"),
        ("skew_rkl", {"lam": 1.0}, "lam"),
        ("fkl", {"temperature": 0.0}, "temperature"),
        ("fkl", {"vocab_size": 12}, "student 11, teacher 14"),
    ],
)
def test_bad_hyperparameters_raise(name, kw, match):
    s, t, mask = random_inputs(vt=V + 3)
    with pytest.raises(ValueError, match=match):
        call(name, s, t, mask, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_shape_mismatch_raises(name):
    s, t, mask = random_inputs()
    with pytest.raises(ValueError, match=r"\(2, 4, 11\)"):
        call(name, s, t[:, :4], mask)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        call(name, s, t, mask[:, :4])


def test_unknown_name_lists_known():
    s, t, _ = random_inputs()
    with pytest.raises(ValueError, match="fkl"):
        losses.per_token("kl", s, t)
    assert set(losses.DIVERGENCES) == {"fkl", "rkl", "jsd", "tvd", "skew_fkl", "skew_rkl", "abkd"}


def test_cross_entropy_bad_args():
    logits = jnp.zeros((B, T, V))
    targets, mask = jnp.zeros((B, T), jnp.int32), jnp.ones((B, T))
    with pytest.raises(ValueError, match="vocab_size"):
        losses.cross_entropy(logits, targets, mask, vocab_size=V + 1)
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(logits, targets, mask[:, :2])


@pytest.mark.parametrize("name", NAMES)
def test_nan_logits_at_padded_positions_are_harmless(name):
    s, t, mask = random_inputs(seed=12)
    mask[1, 3] = 0.0
    s[1, 3], t[1, 3] = np.nan, np.nan
    assert np.isfinite(call(name, s, t, mask)[0])
    for g in grads(name, s, t, mask):
        assert np.all(np.isfinite(g))
