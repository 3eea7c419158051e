"""kid.exposure_bias: exact enumeration on a bigram pair, Monte Carlo, and tiny kid models."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_fixtures import EOS, FAMILIES, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid import decoding
from kid import exposure_bias as eb
from kid.data import batching
from kid.models import forward as fwd

# --- A bigram teacher and student: the logits of token t are table[token t - 1] -----------

V, L, START, BIGRAM_EOS = 4, 5, 0, 1  # pad after EOS is START (0), masked by the lengths
HORIZONS = (1, 2, 3, 5)
# Rows: the previous token (0 is also the start); columns: the next token (1 is EOS). The
# student drifts to token 3, which the teacher rarely emits and after which the student is
# poor: exposure bias, R > eps.
TEACHER = np.log([
    [0.10, 0.10, 0.70, 0.10],
    [0.25, 0.25, 0.25, 0.25],
    [0.20, 0.20, 0.50, 0.10],
    [0.10, 0.30, 0.30, 0.30],
])  # fmt: skip
STUDENT = np.log([
    [0.10, 0.10, 0.40, 0.40],
    [0.10, 0.20, 0.30, 0.40],
    [0.20, 0.20, 0.45, 0.15],
    [0.60, 0.10, 0.10, 0.20],
])  # fmt: skip


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def bigram_kl() -> np.ndarray:
    """[V] float64 KL(teacher || student) of the next token given the previous one."""
    p, q = np_softmax(TEACHER), np_softmax(STUDENT)
    return np.sum(p * (np.log(p) - np.log(q)), -1)


def expected_accumulated_kl(sampling_table: np.ndarray, horizon: int) -> float:
    """E[sum_{t < min(horizon, len)} KL_t] by recursion over the next token (float64)."""
    probs, kl = np_softmax(sampling_table), bigram_kl()

    def value(prev: int, steps: int) -> float:
        if steps == 0:
            return 0.0
        # An EOS ends the row: only the other tokens carry on accumulating.
        return kl[prev] + sum(
            probs[prev, y] * value(y, steps - 1) for y in range(V) if y != BIGRAM_EOS
        )

    return value(START, horizon)


def all_sequences(sampling_table: np.ndarray):
    """Every distinct decoded row of length L: (tokens [M, L], lengths [M], probabilities [M])."""
    probs = np_softmax(sampling_table)
    rows = []
    for seq in itertools.product(range(V), repeat=L):
        n = seq.index(BIGRAM_EOS) + 1 if BIGRAM_EOS in seq else L
        if any(t != START for t in seq[n:]):
            continue  # after EOS a decoded row holds pad: this is not a distinct sequence
        prev = (START,) + seq[: n - 1]
        rows.append((seq, n, np.prod([probs[a, b] for a, b in zip(prev, seq[:n], strict=True)])))
    tokens, lengths, weights = zip(*rows, strict=True)
    return np.array(tokens), np.array(lengths), np.array(weights)


def bigram_score(decoded):
    prev = jnp.concatenate([jnp.full_like(decoded.tokens[:, :1], START), decoded.tokens[:, :-1]], 1)
    return jnp.asarray(TEACHER, jnp.float32)[prev], jnp.asarray(STUDENT, jnp.float32)[prev]


def bigram_sampler(table: np.ndarray, n: int):
    table = jnp.asarray(table, jnp.float32)

    def step(tokens, cache, i):
        return table[tokens], cache

    return lambda rng: decoding.sample(
        jnp.broadcast_to(table[START], (n, V)),
        (),
        step,
        max_new_tokens=L,
        select=decoding.sampler("sample"),
        rng=rng,
        eos_id=BIGRAM_EOS,
        pad_id=START,
    )


@pytest.mark.parametrize("policy", ["student", "teacher"])
def test_enumerated_accumulated_kl_is_exact(policy):
    table = STUDENT if policy == "student" else TEACHER
    tokens, lengths, weights = all_sequences(table)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    assert (lengths < L).any() and (lengths == L).any()
    decoded = decoding.Decoded(jnp.asarray(tokens), jnp.asarray(lengths), jnp.zeros(tokens.shape))
    got = eb.accumulated_kl(
        *bigram_score(decoded), decoded.lengths, horizons=HORIZONS, weights=jnp.asarray(weights)
    )
    expected = [expected_accumulated_kl(table, h) for h in HORIZONS]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_monte_carlo_curve_matches_enumeration():
    n = 20_000
    curve = jax.jit(
        lambda rng: eb.exposure_bias_curve(
            bigram_sampler(STUDENT, n),
            bigram_sampler(TEACHER, n),
            bigram_score,
            rng,
            horizons=HORIZONS,
        )
    )(jax.random.key(0))
    exact, stderr = {}, {}
    for name, table in (("R", STUDENT), ("eps", TEACHER)):
        tokens, lengths, weights = all_sequences(table)
        per_row = np_accumulated(tokens, lengths)  # for the standard error of an n-sample mean
        exact[name] = weights @ per_row
        stderr[name] = np.sqrt(np.maximum(weights @ per_row**2 - exact[name] ** 2, 0) / n)
        np.testing.assert_allclose(
            exact[name], [expected_accumulated_kl(table, h) for h in HORIZONS]
        )
        error = np.abs(np.asarray(curve[name]) - exact[name])
        assert np.all(error <= 4 * stderr[name] + 1e-6), (name, error, stderr[name])
    r, eps = exact["R"], exact["eps"]
    # The first token sees only the start token; later, the student's own prefixes cost more.
    np.testing.assert_allclose(r[0], eps[0])
    assert np.all(r[1:] > eps[1:])
    # ExAccErr against the exact one, within 4 standard errors (delta method; R and eps come
    # from independent samples). At l = 1 both are KL_0 exactly, so ExAccErr(1) = 0.
    exacc_stderr = 100 * np.sqrt(stderr["R"] ** 2 / eps**2 + r**2 * stderr["eps"] ** 2 / eps**4)
    error = np.abs(np.asarray(curve["exacc_err"]) - (r - eps) / eps * 100)
    assert np.all(error <= 4 * exacc_stderr + 1e-3), (error, exacc_stderr)


def np_accumulated(tokens, lengths):
    """[N, len(HORIZONS)] float64 sum_{t < min(l, length)} KL_t of bigram rows [N, L]."""
    prev = np.concatenate([np.full((len(tokens), 1), START), tokens[:, :-1]], 1)
    per_row = np.cumsum(np.where(np.arange(L) < lengths[:, None], bigram_kl()[prev], 0), 1)
    return per_row[:, np.array(HORIZONS) - 1]


def test_curve_on_the_sampled_rows_matches_numpy():
    """R, eps and ExAccErr recomputed in numpy from the very rows each sampler drew (the
    samplers record them; the curve runs eagerly), with row weights, some 0."""
    n = 64
    weights = np.random.default_rng(0).random(n) * (np.arange(n) % 5 != 0)
    drawn = {}

    def recording(name, table):
        sample = bigram_sampler(table, n)

        def fn(rng):
            drawn[name] = sample(rng)
            return drawn[name]

        return fn

    curve = eb.exposure_bias_curve(
        recording("R", STUDENT),
        recording("eps", TEACHER),
        bigram_score,
        jax.random.key(2),
        horizons=HORIZONS,
        weights=jnp.asarray(weights),
    )
    expected = {}
    for name, decoded in drawn.items():
        per_row = np_accumulated(np.asarray(decoded.tokens), np.asarray(decoded.lengths))
        expected[name] = weights @ per_row / weights.sum()
    expected["exacc_err"] = (expected["R"] - expected["eps"]) / expected["eps"] * 100
    assert not np.allclose(expected["R"][1:], expected["eps"][1:])
    for name in ("R", "eps", "exacc_err"):
        np.testing.assert_allclose(curve[name], expected[name], rtol=1e-5, atol=1e-4)


def test_exacc_err_zero_over_zero_is_zero():
    got = eb.exacc_err(jnp.array([0.0, 1.0, 3.0, 1.0]), jnp.array([0.0, 0.0, 2.0, 2.0]))
    np.testing.assert_array_equal(got, [0.0, np.inf, 50.0, -50.0])


def test_ended_positions_and_zero_weight_rows_are_ignored():
    """Logits past a row's length, and every logit of a weight-0 row, may be NaN."""
    teacher, student = (np.random.default_rng(s).standard_normal((3, 4, V)) for s in (1, 2))
    lengths, weights = jnp.array([2, 4, 3]), jnp.array([1.0, 2.0, 0.0])
    clean = eb.accumulated_kl(teacher, student, lengths, horizons=(1, 4), weights=weights)
    kl = np.sum(np_softmax(teacher) * np.log(np_softmax(teacher) / np_softmax(student)), -1)
    expected = [(kl[0, 0] + 2 * kl[1, 0]) / 3, (kl[0, :2].sum() + 2 * kl[1].sum()) / 3]
    np.testing.assert_allclose(clean, expected, rtol=1e-5)
    past_end = jnp.arange(4)[None, :, None] >= lengths[:, None, None]
    dirty = jnp.where(past_end | (weights[:, None, None] == 0), jnp.nan, student)
    got = eb.accumulated_kl(teacher, dirty, lengths, horizons=(1, 4), weights=weights)
    np.testing.assert_allclose(got, clean, rtol=1e-6)
    assert np.all(np.isfinite(got))


def test_horizons_are_checked():
    logits = jnp.zeros((1, 3, V))
    for horizons in [(), (0,), (4,)]:
        with pytest.raises(ValueError, match="horizons"):
            eb.accumulated_kl(logits, logits, jnp.array([3]), horizons=horizons)


# --- kid models ---------------------------------------------------------------------------

MODEL_HORIZONS, NEW_TOKENS, SAMPLES = (1, 2, 4, 6), 6, 4


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_model_curve(family, module, student_vars, teacher_vars, batch):
    """R, eps and ExAccErr in float64 numpy on the rows `exposure_bias` samples: each prompt
    SAMPLES times, the student with the first key of split(rng), the teacher with the second
    (`exposure_bias_curve`); each row scored by full forwards of a batch built anew."""
    repeated = {k: np.repeat(v, SAMPLES, axis=0) for k, v in batch.items()}
    prompt_ids, prompt_mask = map(np.asarray, batching.prompt_arrays(repeated))
    prompts = [ids[mask > 0] for ids, mask in zip(prompt_ids, prompt_mask, strict=True)]
    weights = repeated["weights"].astype(np.float64)
    horizons = np.array(MODEL_HORIZONS) - 1
    keys = jax.random.split(jax.random.key(1))
    out = {}
    for name, variables, key in (("R", student_vars, keys[0]), ("eps", teacher_vars, keys[1])):
        decoded = decoding.generate(
            module,
            variables,
            prompt_ids,
            prompt_mask,
            max_new_tokens=NEW_TOKENS,
            method="sample",
            rng=key,
            eos_id=EOS,
            pad_id=PAD,
        )
        tokens, lengths = np.asarray(decoded.tokens), np.asarray(decoded.lengths)
        rows = [row[:n] for row, n in zip(tokens, lengths, strict=True)]
        rebuilt = make_batch(family, prompts, rows, target_len=NEW_TOKENS)
        log_p, log_q = (
            np_log_softmax(np.asarray(fwd.forward(module, v, rebuilt), np.float64))
            for v in (teacher_vars, student_vars)
        )
        kl = np.sum(np.exp(log_p) * (log_p - log_q), -1)  # KL(teacher || student) [N, L]
        kl = np.where(np.arange(NEW_TOKENS) < lengths[:, None], kl, 0.0)
        out[name] = weights @ np.cumsum(kl, 1)[:, horizons] / weights.sum()
    out["exacc_err"] = (out["R"] - out["eps"]) / out["eps"] * 100
    return out


def run(module, student_vars, teacher_vars, batch):
    return eb.exposure_bias(
        module,
        student_vars,
        module,
        teacher_vars,
        batch,
        jax.random.key(1),
        horizons=MODEL_HORIZONS,
        num_samples=SAMPLES,
        max_new_tokens=NEW_TOKENS,
        eos_id=EOS,
        pad_id=PAD,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_kid_models(family):
    """Every call has the same shapes (one compilation): 3 real rows and a padding row."""
    module = tiny_module(family)
    teacher, student = tiny_variables(module, seed=0), tiny_variables(module, seed=1)
    prompts, targets = random_rows(0, batch=4)

    def batch(weights, rows=prompts):
        return make_batch(family, rows, targets, weights=weights)

    same = run(module, teacher, teacher, batch([1, 1, 1, 0]))
    assert same["horizons"] == list(MODEL_HORIZONS)
    assert same["R"] == same["eps"] == same["exacc_err"] == [0.0] * len(MODEL_HORIZONS)

    out = run(module, student, teacher, batch([1, 1, 1, 0]))
    r, eps = np.array(out["R"]), np.array(out["eps"])
    assert np.all(np.isfinite(r)) and np.all(r > 0) and np.all(eps > 0)
    assert np.all(np.diff(r) >= 0) and np.all(np.diff(eps) >= 0)
    np.testing.assert_allclose(r[0], eps[0], rtol=1e-5)  # the first token sees only the prompt
    expected = np_model_curve(family, module, student, teacher, batch([1, 1, 1, 0]))
    for key in ("R", "eps"):
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-4)
    np.testing.assert_allclose(out["exacc_err"], expected["exacc_err"], rtol=1e-3, atol=1e-3)

    # The padding row's content does not matter, and it counts in neither the sum nor the
    # normaliser: with weight 1 the result is the 3 : 1 mixture (same shapes, same samples).
    other = run(module, student, teacher, batch([1, 1, 1, 0], [*prompts[:3], prompts[0][::-1]]))
    alone = run(module, student, teacher, batch([0, 0, 0, 1]))
    counted = run(module, student, teacher, batch([1, 1, 1, 1]))
    for key in ("R", "eps"):
        np.testing.assert_allclose(other[key], out[key], rtol=1e-6)
        mixture = (3 * np.array(out[key]) + alone[key]) / 4
        np.testing.assert_allclose(counted[key], mixture, rtol=1e-5)
        assert not np.allclose(counted[key], out[key], rtol=1e-3)


def test_padded_vocabulary_rows_are_never_sampled():
    """A teacher whose table has 8 padding rows past the tokenizer's 128 ids: sampling is
    restricted to the vocabulary, so the student never sees an id it has no row for."""
    student = tiny_module("decoder")
    teacher = tiny_module("decoder", vocab_size=136)
    batch = make_batch("decoder", *random_rows(0, batch=4), weights=[1, 1, 1, 0])
    out = eb.exposure_bias(
        student,
        tiny_variables(student, seed=1),
        teacher,
        tiny_variables(teacher, seed=0),
        batch,
        jax.random.key(1),
        horizons=MODEL_HORIZONS,
        num_samples=SAMPLES,
        max_new_tokens=NEW_TOKENS,
        eos_id=EOS,
        pad_id=PAD,
        vocab_size=128,
    )
    assert np.all(np.isfinite(out["R"])) and np.all(np.isfinite(out["eps"]))
