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
VOCAB = 128  # the tokenizer's vocabulary


def _eligible(lengths, width=10):
    """[B, width] bool: the first n positions of each row are maskable."""
    return np.arange(width)[None, :] < np.asarray(lengths)[:, None]


# ----------------------------------------------------------------------------------------------
# Independent references (numpy / Python), never calling kid.imperfect.


def _np_count(n, alpha):
    """Masked tokens of a row with n eligible ones: max(1, round(alpha n)), Python's round."""
    return 0 if alpha == 0 or n == 0 else max(1, round(alpha * n))


def _np_uniform(n, k):
    """Ordinals of k centred, evenly spaced picks among n: ceil((j + 1/2) n / k) - 1."""
    return [-(-(2 * j + 1) * n // (2 * k)) - 1 for j in range(k)]


def _np_eligible_counts(gold, real):
    """[B] real target tokens before each row's first EOS."""
    counts = []
    for row, live in zip(gold, real, strict=True):
        ends = np.flatnonzero((row == EOS) & live)
        counts.append(int(ends[0]) if len(ends) else int(live.sum()))
    return np.array(counts)


def _np_uniform_selection(gold, real, alpha):
    """[B, T] bool: the uniform strategy's positions (eligible tokens are a row's prefix)."""
    selected = np.zeros(gold.shape, bool)
    for i, n in enumerate(_np_eligible_counts(gold, real)):
        selected[i, _np_uniform(n, _np_count(n, alpha))] = True
    return selected


def _np_entropy(logits):
    """[B, T] float64 entropy of softmax(logits), -inf columns excluded."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    p = np.exp(log_p)
    return -np.sum(np.where(p > 0, p * np.where(p > 0, log_p, 0.0), 0.0), -1)


def _np_top(scores, counts):
    """[B, T] bool: the counts[b] highest of each row's scores [B, T] (ties: leftmost)."""
    chosen = np.zeros(scores.shape, bool)
    for i, k in enumerate(counts):
        chosen[i, np.argsort(-scores[i], kind="stable")[:k]] = True
    return chosen


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
def test_mask_counts(alpha):
    lengths = [0, 1, 2, 3, 5, 7, 10]
    got = imperfect.mask_counts(jnp.asarray(_eligible(lengths)), alpha)
    np.testing.assert_array_equal(got, [_np_count(n, alpha) for n in lengths])


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
    np.testing.assert_array_equal(chosen.sum(1), [_np_count(n, alpha) for n in lengths])


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
        assert list(picked) == _np_uniform(n, _np_count(n, 0.5))


def test_random_positions_are_uniform_over_the_row():
    eligible = jnp.asarray(_eligible([8]))
    keys = jax.random.split(jax.random.key(0), 4000)
    chosen = jax.vmap(lambda k: imperfect.choose_positions(eligible, 0.25, "random", rng=k))(keys)
    freq = np.asarray(chosen[:, 0, :8]).mean(0)
    np.testing.assert_allclose(freq, 0.25, atol=0.03)  # 2 of 8 positions, 4000 draws


def _spec(**kw):
    return imperfect.Imperfection(
        mask_id=MASK, eos_id=EOS, **{"pad_id": PAD, "vocab_size": VOCAB, **kw}
    )


def test_fill_logits_ban_the_mask_token_pad_and_padded_ids_but_not_eos():
    """Fills rank: id 129 (past the vocabulary) > PAD > MASK > EOS > the rest."""
    logits = jnp.zeros((2, 3, 130)).at[..., 129].set(40.0).at[..., PAD].set(30.0)
    logits = logits.at[..., MASK].set(20.0).at[..., EOS].set(10.0)
    filled = np.asarray(imperfect.fill_logits(logits, _spec()))
    banned = np.isin(np.arange(130), [PAD, MASK, 128, 129])
    assert np.all(filled[..., banned] == -np.inf)
    np.testing.assert_array_equal(filled[..., ~banned], np.asarray(logits)[..., ~banned])
    assert np.all(filled.argmax(-1) == EOS)  # an EOS fill is allowed
    # A tokenizer without a pad token pads with EOS: that id stays a (EOS) fill.
    same = np.asarray(imperfect.fill_logits(logits, _spec(pad_id=EOS)))
    assert np.all(same[..., PAD] == 30.0) and np.all(same.argmax(-1) == PAD)


def _setup(family, seed=0):
    module = tiny_module(family)
    variables = tiny_variables(module, seed=seed)
    batch = make_batch(family, *random_rows(seed, batch=4, max_target=8), target_len=8)
    return module, variables, batch


def _reference_logits(module, variables, family, batch, tokens):
    """[B, T, V] float64 target logits when the targets are ``tokens`` [B, T] (a batch
    built from scratch, plain apply), with the ids a fill never takes at -inf: the mask
    token, PAD and the embedding table's rows past the tokenizer's vocabulary."""
    logits = np.array(fwd.forward(module, variables, _rebuilt(family, batch, tokens)), np.float64)
    logits[..., [MASK, PAD]] = -np.inf
    logits[..., VOCAB:] = -np.inf
    return logits


def _reference_argmax(module, variables, family, batch, tokens):
    """argmax of ``_reference_logits``: the fill the student should choose."""
    return _reference_logits(module, variables, family, batch, tokens).argmax(-1)


def _rebuilt(family, batch, tokens):
    """A batch built from scratch with ``batch``'s prompts and real target positions, holding
    ``tokens`` [B, T] there."""
    prompts = [np.asarray(r)[np.asarray(m) > 0] for r, m in zip(*_prompt_rows(batch), strict=True)]
    real = np.asarray(fwd.target_tokens(batch)[1])
    rows = [np.asarray(tokens)[i][real[i]] for i in range(len(prompts))]
    return make_batch(family, prompts, rows, target_len=tokens.shape[1])


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
    counts = [_np_count(n, 0.5) for n in _np_eligible_counts(gold, np.asarray(real))]
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
    selected = _np_uniform_selection(gold, real, 0.5)
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


# ----------------------------------------------------------------------------------------------
# Fills: never PAD, EOS allowed anywhere; rows without EOS; hard / easy end to end.


def _untied(family, **overrides):
    """A tiny model with its own output layer (the decoder's is tied by default)."""
    untie = {} if family == "t5" else {"tie_word_embeddings": False}
    return tiny_module(family, **untie, **overrides)


def _scale_output_columns(variables, ids, factor):
    """Variables whose output-layer columns ``ids`` are multiplied by ``factor`` (and, with
    factor None, the columns ids[0] and ids[1] swapped); the input embeddings stay."""
    kernel = np.array(variables["params"]["lm_head"]["kernel"])
    if factor is None:
        kernel[:, list(ids)] = kernel[:, list(ids)[::-1]]
    else:
        kernel[:, list(ids)] *= factor
    head = {**variables["params"]["lm_head"], "kernel": jnp.asarray(kernel)}
    params = {**variables["params"], "lm_head": head}
    return {**variables, "params": params}


def _swap(variables, a, b):
    """The model now prefers id b wherever it preferred id a, and the reverse."""
    return _scale_output_columns(variables, (int(a), int(b)), None)


def _reference_fills(module, variables, family, batch, gold, selected, *, cascade):
    """[B, T] gold with every selected position replaced by the student's fill: all at
    once on the masked sequence, or (cascade) left to right, each seeing earlier fills."""
    if not cascade:
        masked = np.where(selected, MASK, gold)
        return np.where(selected, _reference_argmax(module, variables, family, batch, masked), gold)
    current = gold.copy()
    for col in range(gold.shape[1]):
        if selected[:, col].any():
            predicted = _reference_argmax(module, variables, family, batch, current)
            current[:, col] = np.where(selected[:, col], predicted[:, col], current[:, col])
    return current


def _raw_argmax(module, variables, family, batch, tokens):
    """argmax over the tokenizer's vocabulary, PAD and EOS included (mask token excluded)."""
    logits = np.array(fwd.forward(module, variables, _rebuilt(family, batch, tokens)))
    logits[..., MASK] = -np.inf
    return logits[..., :VOCAB].argmax(-1)


@pytest.mark.parametrize("cascade", [False, True], ids=["parallel", "cascade"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fills_are_never_pad_and_an_eos_fill_stands_mid_sequence(family, cascade):
    """The student prefers PAD at row 0's first masked position and EOS at row 1's: the
    first fill is its best id other than PAD, the second is EOS, inside the row, with the
    row's later tokens kept (and, cascade, later fills predicted after it)."""
    module = _untied(family)
    variables = tiny_variables(module, seed=5)
    batch = make_batch(family, *random_rows(5, batch=4, max_target=8), target_len=8)
    gold, real = map(np.asarray, fwd.target_tokens(batch))
    selected = _np_uniform_selection(gold, real, 0.5)
    first = [int(np.flatnonzero(selected[row])[0]) for row in (0, 1)]
    masked = np.where(selected, MASK, gold)
    best = _raw_argmax(module, variables, family, batch, masked)
    variables = _swap(variables, best[0, first[0]], PAD)
    best = _raw_argmax(module, variables, family, batch, masked)
    variables = _swap(variables, best[1, first[1]], EOS)
    best = _raw_argmax(module, variables, family, batch, masked)
    assert best[0, first[0]] == PAD and best[1, first[1]] == EOS
    assert first[1] < _np_eligible_counts(gold, real)[1] - 1  # gold tokens follow the EOS

    spec = _spec(alpha=0.5, strategy="uniform", cascade=cascade)
    rewritten, chosen = imperfect.imperfect_batch(module, variables, batch, jax.random.key(0), spec)
    new = np.asarray(fwd.target_tokens(rewritten)[0])
    np.testing.assert_array_equal(chosen, selected)
    assert new[0, first[0]] != PAD and new[1, first[1]] == EOS
    assert not np.any(new[selected] == PAD)
    expected = _reference_fills(module, variables, family, batch, gold, selected, cascade=cascade)
    np.testing.assert_array_equal(new[real], expected[real])


@pytest.mark.parametrize("family", FAMILIES)
def test_cascade_row_without_eos_fills_every_masked_position(family):
    """A target cut to the batch's width (no EOS, no padding) with its last two positions
    masked: the first predicts EOS, and the second is still the student's argmax (given
    the rewritten prefix, EOS included), not a token written after an ended row."""
    width = 6
    module = _untied(family)
    variables = tiny_variables(module, seed=4)
    rng = np.random.default_rng(4)
    prompts = [rng.integers(3, MASK, 5) for _ in range(2)]
    rows = [rng.integers(3, MASK, width) for _ in range(2)]  # no EOS, PAD nor MASK
    batch = make_batch(family, prompts, rows, target_len=width)
    gold = np.stack(rows)
    assert np.all(np.asarray(fwd.target_tokens(batch)[1]))  # no padding either
    selected = np.zeros(gold.shape, bool)
    selected[:, width - 2 :] = True
    # Row 0's first masked position predicts EOS: swap EOS with its argmax there.
    variables = _swap(variables, _raw_argmax(module, variables, family, batch, gold)[0, -2], EOS)
    tokens = np.asarray(
        imperfect.predict_cascade(
            module, variables, batch, jnp.asarray(selected), jax.random.key(0), _spec()
        )
    )
    expected = _reference_fills(module, variables, family, batch, gold, selected, cascade=True)
    assert expected[0, -2] == EOS and expected[0, -1] not in (EOS, PAD)
    np.testing.assert_array_equal(tokens, expected)


@pytest.mark.parametrize("inflated", ["padded_rows", "mask_token"])
@pytest.mark.parametrize("strategy", ["hard", "easy"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hard_and_easy_rank_by_the_fill_distribution_end_to_end(family, strategy, inflated):
    """imperfect_batch with a table of 136 rows for the tokenizer's 128 ids, whose padding
    rows (or mask-token column) carry large logits: positions are ranked by the entropy of
    the fill distribution (those columns excluded), which chooses other positions than the
    entropy over every column would; the fills are the argmax on the masked sequence."""
    module = _untied(family, vocab_size=VOCAB + 8)
    variables = tiny_variables(module, seed=6)
    columns = list(range(VOCAB, VOCAB + 8)) if inflated == "padded_rows" else [MASK]
    variables = _scale_output_columns(variables, columns, 6.0)
    batch = make_batch(family, *random_rows(6, batch=4, max_target=8), target_len=8)
    gold, real = map(np.asarray, fwd.target_tokens(batch))
    counts = [_np_count(n, 0.5) for n in _np_eligible_counts(gold, real)]
    eligible = np.arange(gold.shape[1])[None, :] < _np_eligible_counts(gold, real)[:, None]
    sign = 1.0 if strategy == "hard" else -1.0

    def choice(entropy):
        return _np_top(np.where(eligible, sign * entropy, -np.inf), counts)

    expected = choice(_np_entropy(_reference_logits(module, variables, family, batch, gold)))
    every_column = np.asarray(fwd.forward(module, variables, _rebuilt(family, batch, gold)))
    assert np.any(choice(_np_entropy(every_column)) != expected)  # the columns matter here

    rewritten, chosen = imperfect.imperfect_batch(
        module, variables, batch, jax.random.key(0), _spec(alpha=0.5, strategy=strategy)
    )
    np.testing.assert_array_equal(chosen, expected)
    fills = _reference_fills(module, variables, family, batch, gold, expected, cascade=False)
    np.testing.assert_array_equal(np.asarray(fwd.target_tokens(rewritten)[0])[real], fills[real])
