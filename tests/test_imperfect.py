"""kid.imperfect: KID's masking strategies, parallel and cascade prediction, the rewrite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_fixtures import EOS, FAMILIES, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid import imperfect
from kid.models import forward as fwd

MASK = 127  # the last id of the tiny vocabulary stands in for the tokenizer's mask token


def _eligible(lengths, width=10):
    """[B, width] bool: the first n positions of each row are maskable."""
    return np.arange(width)[None, :] < np.asarray(lengths)[:, None]


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
def test_mask_counts(alpha):
    lengths = [0, 1, 2, 3, 5, 7, 10]
    got = imperfect.mask_counts(jnp.asarray(_eligible(lengths)), alpha)
    expected = [0 if alpha == 0 or n == 0 else max(1, round(alpha * n)) for n in lengths]
    np.testing.assert_array_equal(got, expected)


def test_eligible_positions_exclude_eos_padding_and_what_follows_eos():
    targets = jnp.array([[5, 6, EOS, PAD], [7, EOS, 8, EOS], [9, 9, 9, 9]])
    real = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    got = imperfect.eligible_positions(targets, real, (EOS,))
    np.testing.assert_array_equal(got, [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize("strategy", imperfect.STRATEGIES)
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5])
def test_chosen_positions_are_eligible_and_counted(strategy, alpha):
    lengths = [0, 1, 3, 6, 10]
    eligible = jnp.asarray(_eligible(lengths))
    entropy = jax.random.uniform(jax.random.key(1), eligible.shape)
    chosen = imperfect.choose_positions(
        eligible, alpha, strategy, rng=jax.random.key(0), entropy=entropy
    )
    assert not np.any(np.asarray(chosen) & ~np.asarray(eligible))
    np.testing.assert_array_equal(chosen.sum(1), imperfect.mask_counts(eligible, alpha))


@pytest.mark.parametrize("strategy", ["hard", "easy"])
def test_hard_and_easy_pick_the_highest_and_lowest_entropy(strategy):
    rng = np.random.default_rng(0)
    entropy = rng.random((4, 10))
    lengths = [10, 7, 4, 1]
    eligible = _eligible(lengths)
    chosen = np.asarray(
        imperfect.choose_positions(
            jnp.asarray(eligible), 0.3, strategy, entropy=jnp.asarray(entropy)
        )
    )
    for row, n in enumerate(lengths):
        k = max(1, round(0.3 * n))
        order = np.argsort(entropy[row, :n])
        expected = order[-k:] if strategy == "hard" else order[:k]
        assert set(np.flatnonzero(chosen[row])) == set(expected)


def test_uniform_positions_are_evenly_spaced():
    eligible = _eligible([10, 10, 9, 4], width=10)
    chosen = np.asarray(imperfect.choose_positions(jnp.asarray(eligible), 0.2, "uniform"))
    assert list(np.flatnonzero(chosen[0])) == [2, 7]
    chosen = np.asarray(imperfect.choose_positions(jnp.asarray(eligible), 0.5, "uniform"))
    for row, n in enumerate([10, 10, 9, 4]):
        picked = np.flatnonzero(chosen[row])
        gaps = np.diff(np.concatenate([[-1], picked, [n]]))
        assert gaps.max() - gaps.min() <= 2, (row, picked)


def test_random_positions_are_uniform_over_the_row():
    eligible = jnp.asarray(_eligible([8]))
    keys = jax.random.split(jax.random.key(0), 4000)
    chosen = jax.vmap(lambda k: imperfect.choose_positions(eligible, 0.25, "random", rng=k))(keys)
    freq = np.asarray(chosen[:, 0, :8]).mean(0)
    np.testing.assert_allclose(freq, 0.25, atol=0.03)  # 2 of 8 positions, 4000 draws


def test_fill_logits_never_allow_the_mask_token_or_padded_ids():
    logits = jnp.zeros((2, 3, 130)).at[..., MASK].set(10.0).at[..., 129].set(20.0)
    filled = imperfect.fill_logits(logits, mask_id=MASK, vocab_size=128)
    assert np.all(np.asarray(filled)[..., MASK] == -np.inf)
    assert np.all(np.asarray(filled)[..., 128:] == -np.inf)
    assert np.all(np.asarray(jnp.argmax(filled, -1)) < 128)


def _spec(**kw):
    return imperfect.Imperfection(mask_id=MASK, eos_id=EOS, vocab_size=128, **kw)


def _setup(family, seed=0):
    module = tiny_module(family)
    variables = tiny_variables(module, seed=seed)
    batch = make_batch(family, *random_rows(seed, batch=4, max_target=8), target_len=8)
    return module, variables, batch


def _reference_argmax(module, variables, family, batch, tokens):
    """argmax (mask token and padded ids excluded) of the target logits when the targets
    are ``tokens`` [B, T] (a batch built from scratch, plain apply)."""
    prompts = [np.asarray(r)[np.asarray(m) > 0] for r, m in zip(*_prompt_rows(batch), strict=True)]
    _, real = fwd.target_tokens(batch)
    rows = [np.asarray(tokens)[i][np.asarray(real)[i]] for i in range(len(prompts))]
    rebuilt = make_batch(family, prompts, rows, target_len=tokens.shape[1])
    logits = np.array(fwd.forward(module, variables, rebuilt))
    logits[..., MASK] = -np.inf
    return logits.argmax(-1)


def _prompt_rows(batch):
    if "prompt_ids" in batch:
        return batch["prompt_ids"], batch["prompt_mask"]
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("family", FAMILIES)
def test_parallel_rewrite_changes_only_masked_positions(family):
    module, variables, batch = _setup(family)
    spec = _spec(alpha=0.5)
    rewritten, selected = jax.jit(lambda v, b, r: imperfect.imperfect_batch(module, v, b, r, spec))(
        variables, batch, jax.random.key(3)
    )
    gold, real = fwd.target_tokens(batch)
    new, _ = fwd.target_tokens(rewritten)
    selected, gold, new = map(np.asarray, (selected, gold, new))
    assert selected.sum() > 0
    np.testing.assert_array_equal(new[~selected], gold[~selected])
    assert not np.any(new == MASK)
    # The fills are the student's argmax on the masked sequence (mask token at every
    # masked position), read at the target alignment.
    masked = np.where(selected, MASK, gold)
    expected = _reference_argmax(module, variables, family, batch, masked)
    np.testing.assert_array_equal(new[selected], expected[selected])
    counts = imperfect.mask_counts(
        imperfect.eligible_positions(jnp.asarray(gold), real, (EOS,)), 0.5
    )
    np.testing.assert_array_equal(selected.sum(1), counts)


@pytest.mark.parametrize("family", FAMILIES)
def test_cascade_without_masked_positions_returns_gold(family):
    module, variables, batch = _setup(family, seed=1)
    gold, real = fwd.target_tokens(batch)
    none = jnp.zeros(gold.shape, bool)
    tokens = imperfect.predict_cascade(module, variables, batch, none, jax.random.key(0), _spec())
    np.testing.assert_array_equal(
        np.asarray(tokens)[np.asarray(real)], np.asarray(gold)[np.asarray(real)]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_cascade_with_one_masked_position_equals_the_parallel_rewrite(family):
    module, variables, batch = _setup(family, seed=2)
    gold, real = fwd.target_tokens(batch)
    one = np.zeros(gold.shape, bool)
    one[:, 1] = np.asarray(real)[:, 2]  # position 1 of rows long enough (not EOS)
    one = jnp.asarray(one)
    key = jax.random.key(0)
    cascade = imperfect.predict_cascade(module, variables, batch, one, key, _spec())
    parallel = imperfect.predict_parallel(module, variables, batch, one, key, _spec())
    np.testing.assert_array_equal(
        np.asarray(cascade)[np.asarray(one)], np.asarray(parallel)[np.asarray(one)]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_cascade_predictions_see_the_rewritten_prefix(family):
    """Reference: fill masked positions left to right, one full (uncached) forward each."""
    module, variables, batch = _setup(family, seed=3)
    gold, real = map(np.asarray, fwd.target_tokens(batch))
    eligible = imperfect.eligible_positions(jnp.asarray(gold), jnp.asarray(real), (EOS,))
    selected = np.asarray(imperfect.choose_positions(eligible, 0.5, "uniform"))
    tokens = np.asarray(
        imperfect.predict_cascade(
            module, variables, batch, jnp.asarray(selected), jax.random.key(0), _spec()
        )
    )
    current = gold.copy()
    for col in range(gold.shape[1]):
        if selected[:, col].any():
            predicted = _reference_argmax(module, variables, family, batch, current)
            current[:, col] = np.where(selected[:, col], predicted[:, col], current[:, col])
    np.testing.assert_array_equal(tokens[selected], current[selected])
    # KID's cascade rewrite through imperfect_batch splices exactly these.
    rewritten, chosen = imperfect.imperfect_batch(
        module,
        variables,
        batch,
        jax.random.key(5),
        _spec(alpha=0.5, strategy="uniform", cascade=True),
    )
    np.testing.assert_array_equal(chosen, selected)
    np.testing.assert_array_equal(np.asarray(fwd.target_tokens(rewritten)[0])[real], current[real])


def test_alpha_zero_returns_the_batch_itself():
    module, variables, batch = _setup("decoder")
    rewritten, selected = imperfect.imperfect_batch(
        module, variables, batch, jax.random.key(0), _spec(alpha=0.0)
    )
    assert rewritten is batch and not np.any(selected)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        _spec(alpha=1.5)
    with pytest.raises(ValueError, match="strategy"):
        _spec(strategy="hardest")
    with pytest.raises(ValueError, match="fill"):
        _spec(fill="beam")
