"""Model-agnostic decoding loops against numpy references on a toy prefix-dependent LM."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kid import decoding


class ToyLM:
    """A tiny LM whose next-token logits depend on the whole prefix, order included.

    logits(prefix) = tanh(sum_i E[i, prefix_i]) @ W, where prefix starts with a per-row
    start token. The decoding step keeps the running sum as its cache; `logits` recomputes it
    from scratch in numpy, the uncached reference.
    """

    def __init__(self, vocab: int, max_len: int, seed: int = 0, scale: float = 3.0):
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.embed = rng.normal(size=(max_len + 1, vocab, 16)).astype(np.float32)
        self.out = (scale * rng.normal(size=(16, vocab)) / 4).astype(np.float32)

    def logits(self, prefix) -> np.ndarray:
        hidden = sum(self.embed[i, t] for i, t in enumerate(prefix))
        return (np.tanh(hidden) @ self.out).astype(np.float64)

    def start(self, starts):
        """(initial logits [batch, vocab], cache) for rows beginning with `starts`."""
        hidden = jnp.asarray(self.embed[0])[jnp.asarray(starts)]
        return jnp.tanh(hidden) @ self.out, hidden

    def step(self, tokens, hidden, step):
        hidden = hidden + jnp.asarray(self.embed)[step + 1, tokens]
        return jnp.tanh(hidden) @ self.out, hidden


def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def softmax(x):
    return np.exp(log_softmax(x))


def run_sample(model, starts, *, eos_id=None, pad_id=0, rng=None, max_new_tokens, **kwargs):
    logits, cache = model.start(starts)
    return decoding.sample(
        logits,
        cache,
        model.step,
        max_new_tokens=max_new_tokens,
        select=decoding.sampler(**kwargs),
        rng=rng,
        eos_id=eos_id,
        pad_id=pad_id,
    )


def run_beam(model, starts, *, num_beams, **kwargs):
    logits, cache = model.start(starts)
    return decoding.beam_search(
        logits, jnp.repeat(cache, num_beams, axis=0), model.step, num_beams=num_beams, **kwargs
    )


def test_filter_logits_exact():
    logits = jnp.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, -1.0]])
    inf = -np.inf
    np.testing.assert_array_equal(
        decoding.filter_logits(logits, top_k=2), [[inf, 3, 2, inf], [0, 0, 5, inf]]
    )  # the tie with the 2nd largest is kept
    # softmax([3, 2, 1, 0]) = [.644, .237, .087, .032]: 0.7 needs two tokens, 0.5 one.
    np.testing.assert_array_equal(decoding.filter_logits(logits[:1], top_p=0.7), [[inf, 3, 2, inf]])
    np.testing.assert_array_equal(
        decoding.filter_logits(logits[:1], top_p=0.5), [[inf, 3, inf, inf]]
    )
    np.testing.assert_array_equal(decoding.filter_logits(logits, top_k=0, top_p=1.0), logits)


def greedy_reference(model, start, max_new_tokens, eos_id, pad_id):
    stops = set(np.ravel(eos_id).tolist())
    prefix, tokens, logprobs = [start], [], []
    for _ in range(max_new_tokens):
        if stops & set(tokens):
            tokens.append(pad_id)
            logprobs.append(0.0)
            continue
        logits = model.logits(prefix)
        token = int(np.argmax(logits))
        tokens.append(token)
        logprobs.append(log_softmax(logits)[token])
        prefix.append(token)
    return tokens, logprobs


@pytest.mark.parametrize("eos_id", [2, (2, 3), [3, 2]])
def test_greedy_matches_uncached_reference_with_per_row_eos(eos_id):
    model = ToyLM(vocab=5, max_len=8, seed=1)
    starts = list(range(5))
    out = jax.jit(lambda: run_sample(model, starts, eos_id=eos_id, pad_id=4, max_new_tokens=8))()
    lengths, ends = [], set()
    for row, start in enumerate(starts):
        tokens, logprobs = greedy_reference(model, start, 8, eos_id=eos_id, pad_id=4)
        np.testing.assert_array_equal(out.tokens[row], tokens)
        np.testing.assert_allclose(out.logprobs[row], logprobs, atol=1e-5)
        end = next((i for i, t in enumerate(tokens) if t in np.ravel(eos_id)), None)
        lengths.append(8 if end is None else end + 1)
        ends.add(None if end is None else tokens[end])
    np.testing.assert_array_equal(out.lengths, lengths)
    assert set(np.ravel(eos_id)) <= ends  # every stop token ends some row (padding exercised)


def test_sampling_matches_model_distribution():
    """Joint frequencies of the first two tokens match softmax(logits / T)."""
    model, n, temperature = ToyLM(vocab=4, max_len=2, seed=2, scale=1.5), 40_000, 0.7
    out = run_sample(
        model,
        [0] * n,
        method="sample",
        temperature=temperature,
        rng=jax.random.key(0),
        max_new_tokens=2,
    )
    expected = np.zeros((4, 4))
    for a, b in itertools.product(range(4), repeat=2):
        first = softmax(model.logits([0]) / temperature)[a]
        expected[a, b] = first * softmax(model.logits([0, a]) / temperature)[b]
    counts = np.zeros((4, 4))
    np.add.at(counts, (np.asarray(out.tokens[:, 0]), np.asarray(out.tokens[:, 1])), 1)
    # Pearson chi-square with 15 degrees of freedom: P(X > 40) < 5e-4.
    chi2 = ((counts - n * expected) ** 2 / (n * expected)).sum()
    assert chi2 < 40, chi2
    # Log-probabilities are of the raw (untempered) logits.
    raw = [log_softmax(model.logits([0]))[t] for t in np.asarray(out.tokens[:50, 0])]
    np.testing.assert_allclose(out.logprobs[:50, 0], raw, atol=1e-5)


@pytest.mark.parametrize("top_k,top_p", [(2, 1.0), (0, 0.6), (3, 0.5)])
def test_top_k_top_p_never_emit_excluded_tokens(top_k, top_p):
    model, n = ToyLM(vocab=6, max_len=3, seed=3, scale=2.0), 3000
    starts = np.arange(n) % 6
    out = run_sample(
        model,
        starts,
        method="sample",
        temperature=1.3,
        top_k=top_k,
        top_p=top_p,
        rng=jax.random.key(1),
        max_new_tokens=3,
    )
    tokens = np.asarray(out.tokens)
    for start in range(6):
        rows = tokens[starts == start]
        for prefix in {tuple(r[:i]) for r in rows for i in range(3)}:
            logits = model.logits([start, *prefix]) / 1.3
            order = np.argsort(-logits)
            allowed = order[: top_k or 6]
            probs = softmax(logits[allowed])
            allowed = allowed[: max(1, int(np.sum(np.cumsum(probs) - probs < top_p)))]
            following = rows[(rows[:, : len(prefix)] == prefix).all(1)][:, len(prefix)]
            assert set(following) <= set(allowed), (start, prefix, set(following), allowed)
            if prefix == ():  # the renormalised distribution is sampled, not just its support
                freq = np.bincount(following, minlength=6)[allowed] / len(following)
                np.testing.assert_allclose(freq, softmax(logits[allowed]), atol=0.07)


def test_forced_positions_kept_and_free_tokens_are_prefix_argmax():
    model = ToyLM(vocab=7, max_len=6, seed=4)
    rng = np.random.default_rng(0)
    starts = np.arange(4)
    forced_tokens = rng.integers(0, 7, size=(4, 6))
    forced_mask = rng.random((4, 6)) < 0.5
    out = run_sample(
        model,
        starts,
        forced_tokens=jnp.asarray(forced_tokens),
        forced_mask=jnp.asarray(forced_mask),
        max_new_tokens=6,
    )
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[forced_mask], forced_tokens[forced_mask])
    for row, col in zip(*np.nonzero(~forced_mask), strict=True):
        logits = model.logits([starts[row], *tokens[row, :col]])
        assert tokens[row, col] == np.argmax(logits)
        np.testing.assert_allclose(out.logprobs[row, col], log_softmax(logits).max(), atol=1e-5)


def always_eos_bigram(vocab: int, eos_id: int, calls: list):
    """(initial logits, step) of a bigram LM that predicts `eos_id` after every token; the
    step appends to `calls` each time it runs."""
    logits = jnp.where(jnp.arange(vocab) == eos_id, 5.0, 0.0)

    def step(tokens, cache, i):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.broadcast_to(logits, (len(tokens), vocab)), cache

    return logits[None], step


def test_forced_tokens_are_kept_after_a_free_eos():
    """A free position predicting EOS before the last forced one does not end the row."""
    calls = []
    logits, step = always_eos_bigram(vocab=6, eos_id=1, calls=calls)
    gold = np.array([3, 2, 5, 5, 2, 1, 4, 4])
    forced_tokens = np.stack([gold] * 4)
    forced_mask = np.zeros((4, 8), bool)
    forced_mask[0, [0, 2, 3, 4, 5]] = True  # gold, position 1 free, gold EOS forced
    forced_mask[1, [0, 1, 2]] = True  # free after position 2
    forced_mask[2, [2, 3]] = True  # free EOS at 0 and 1 are kept, ends at 4
    select = decoding.sampler(forced_tokens=forced_tokens, forced_mask=forced_mask)
    out = jax.jit(
        lambda: decoding.sample(
            jnp.repeat(logits, 4, 0), (), step, max_new_tokens=8, select=select, eos_id=1
        )
    )()
    jax.effects_barrier()
    np.testing.assert_array_equal(
        out.tokens,
        [
            [3, 1, 5, 5, 2, 1, 0, 0],
            [3, 2, 5, 1, 0, 0, 0, 0],
            [1, 1, 5, 5, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0, 0],  # no forced position: ends at its first EOS, as before
        ],
    )
    np.testing.assert_array_equal(out.lengths, [6, 4, 5, 1])
    eos_logprob = jax.nn.log_softmax(logits[0])[1]
    np.testing.assert_allclose(out.logprobs[0, 1], eos_logprob, rtol=1e-6)
    np.testing.assert_array_equal(out.logprobs[0, 6:], 0.0)
    assert len(calls) == 5  # early exit once every row has ended (after position 5)


def exhaustive_search(model, start, max_new_tokens, eos_id, alpha):
    """All complete sequences (ending in EOS, or of the maximum length) by score."""
    scored = []
    for length in range(1, max_new_tokens + 1):
        for seq in itertools.product(range(model.vocab), repeat=length):
            if eos_id is not None and eos_id in seq[:-1]:
                continue
            if length < max_new_tokens and seq[-1] != eos_id:
                continue
            logprob = sum(
                log_softmax(model.logits([start, *seq[:i]]))[t] for i, t in enumerate(seq)
            )
            scored.append((logprob / length**alpha, seq))
    return sorted(scored, reverse=True)


@pytest.mark.parametrize("eos_id,alpha", [(0, 0.0), (0, 1.0), (None, 0.6)])
def test_beam_search_without_pruning_is_exhaustive_search(eos_id, alpha):
    model, length, beams = ToyLM(vocab=4, max_len=4, seed=5, scale=2.0), 4, 54
    starts = [1, 3]
    out = run_beam(
        model, starts, num_beams=beams, max_new_tokens=length, eos_id=eos_id, pad_id=0,
        length_penalty=alpha,
    )  # fmt: skip
    for row, start in enumerate(starts):
        reference = exhaustive_search(model, start, length, eos_id, alpha)[:beams]
        scores = np.asarray(out.scores[row, : len(reference)])
        np.testing.assert_allclose(scores, [s for s, _ in reference], rtol=1e-4)
        for i, (_, seq) in enumerate(reference[:10]):  # well-separated scores at the top
            np.testing.assert_array_equal(out.beams[row, i, : len(seq)], seq)
            assert out.lengths[row, i] == len(seq)
            np.testing.assert_array_equal(out.beams[row, i, len(seq) :], 0)
            lp = out.beam_logprobs[row, i, : len(seq)].sum() / len(seq) ** alpha
            np.testing.assert_allclose(lp, out.scores[row, i], rtol=1e-4)


def beam_reference(model, start, beams, max_new_tokens, eos_id, alpha):
    """Textbook beam search in Python: extensions ranked, EOS among the best `beams` finish."""
    alive, finished = [((), 0.0)], []
    for length in range(1, max_new_tokens + 1):
        extensions = sorted(
            (
                (seq + (t,), logprob + lp)
                for seq, logprob in alive
                for t, lp in enumerate(log_softmax(model.logits([start, *seq])))
            ),
            key=lambda e: -e[1],
        )
        finished += [
            (lp / length**alpha, seq) for seq, lp in extensions[:beams] if seq[-1] == eos_id
        ]
        alive = [e for e in extensions if e[0][-1] != eos_id][:beams]
    finished += [(lp / max_new_tokens**alpha, seq) for seq, lp in alive]
    return sorted(finished, reverse=True)[:beams]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_pruned_beam_search_matches_reference(alpha):
    model, beams, length = ToyLM(vocab=5, max_len=6, seed=10, scale=2.0), 3, 6
    starts = [0, 1, 2, 3]
    out = run_beam(
        model, starts, num_beams=beams, max_new_tokens=length, eos_id=1, length_penalty=alpha
    )
    for row, start in enumerate(starts):
        reference = beam_reference(model, start, beams, length, 1, alpha)
        np.testing.assert_allclose(out.scores[row], [s for s, _ in reference], rtol=1e-4)
        for i, (_, seq) in enumerate(reference):
            np.testing.assert_array_equal(out.beams[row, i, : len(seq)], seq)


def test_loop_exits_once_every_row_has_finished():
    model = ToyLM(vocab=5, max_len=40, seed=1)
    calls = []

    def step(tokens, cache, i):
        jax.debug.callback(lambda: calls.append(1))
        return model.step(tokens, cache, i)

    logits, cache = model.start([0, 1])
    forced = jnp.zeros((2, 40), bool).at[0, 2].set(True).at[1, 4].set(True)
    out = decoding.sample(
        logits,
        cache,
        step,
        max_new_tokens=40,
        select=decoding.sampler(forced_tokens=jnp.full((2, 40), 3), forced_mask=forced),
        eos_id=3,
    )
    jax.effects_barrier()
    assert out.tokens[0, 2] == out.tokens[1, 4] == 3
    assert np.asarray(out.lengths).max() <= 5 and len(calls) == np.asarray(out.lengths).max() - 1, (
        len(calls)
    )


@pytest.mark.parametrize("eos_id", [2, (2, 3)])
def test_one_beam_equals_greedy(eos_id):
    model = ToyLM(vocab=5, max_len=8, seed=1)
    starts = list(range(5))
    greedy = run_sample(model, starts, eos_id=eos_id, pad_id=4, max_new_tokens=8)
    beam = run_beam(
        model, starts, num_beams=1, max_new_tokens=8, eos_id=eos_id, pad_id=4, length_penalty=0.0
    )
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_allclose(beam.logprobs, greedy.logprobs, atol=1e-5)
    np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)


def run_guided(student, teacher, starts, teacher_top_k, rng, max_new_tokens, **kwargs):
    s_logits, s_cache = student.start(starts)
    t_logits, t_cache = teacher.start(starts)

    def step(tokens, caches, i):
        s, s_cache = student.step(tokens, caches[0], i)
        t, t_cache = teacher.step(tokens, caches[1], i)
        return (s, t), (s_cache, t_cache)

    return decoding.sample(
        (s_logits, t_logits),
        (s_cache, t_cache),
        step,
        max_new_tokens=max_new_tokens,
        select=decoding.guided_sampler(teacher_top_k, **kwargs),
        rng=rng,
    )


def test_guided_tokens_in_teacher_top_k_unless_teacher_sampled():
    student, teacher = ToyLM(6, 5, seed=6), ToyLM(6, 5, seed=7)
    starts = np.arange(200) % 6
    out = run_guided(student, teacher, starts, 2, jax.random.key(2), 5)
    tokens, replaced = np.asarray(out.tokens), np.asarray(out.replaced)
    assert 0 < replaced.mean() < 1
    for row, col in itertools.product(range(len(starts)), range(5)):
        teacher_logits = teacher.logits([starts[row], *tokens[row, :col]])
        in_top_k = tokens[row, col] in np.argsort(-teacher_logits)[:2]
        assert in_top_k or replaced[row, col]
        student_logits = student.logits([starts[row], *tokens[row, :col]])
        np.testing.assert_allclose(
            out.logprobs[row, col], log_softmax(student_logits)[tokens[row, col]], atol=1e-5
        )


def test_guided_distribution():
    """P(v) = p_s(v) [v in top-K of p_t] + p_s(outside top-K) p_t(v), on the first token."""
    student, teacher, n = ToyLM(5, 1, seed=8, scale=1.0), ToyLM(5, 1, seed=9, scale=2.0), 40_000
    out = run_guided(student, teacher, [0] * n, 2, jax.random.key(3), 1)
    p_s, p_t = softmax(student.logits([0])), softmax(teacher.logits([0]))
    top = np.argsort(-p_t)[:2]
    expected = p_s[~np.isin(np.arange(5), top)].sum() * p_t
    expected[top] += p_s[top]
    freq = np.bincount(np.asarray(out.tokens[:, 0]), minlength=5) / n
    np.testing.assert_allclose(freq, expected, atol=0.01)
    assert np.asarray(out.replaced[:, 0]).mean() == pytest.approx(1 - p_s[top].sum(), abs=0.01)


def test_bucket():
    assert [decoding.bucket(n) for n in (0, 1, 8, 9, 100)] == [8, 8, 8, 16, 128]
    assert decoding.bucket(17, [16, 48, 32]) == 32
    with pytest.raises(ValueError, match="exceeds the largest bucket 32"):
        decoding.bucket(33, [16, 32])


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_prompts_trims_and_rebuckets(side):
    ids = np.array([[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 8, 9]])
    mask = (ids != 0).astype(np.int32)
    if side == "right":
        ids, mask = ids[:, ::-1], mask[:, ::-1]
    out_ids, out_mask = decoding.pad_prompts(ids, mask, buckets=[4, 8], pad_id=0, side=side)
    assert out_ids.shape == out_mask.shape == (2, 4)
    expected = np.array([[0, 5, 6, 7], [0, 0, 8, 9]])
    np.testing.assert_array_equal(out_ids, expected if side == "left" else expected[:, ::-1])
    np.testing.assert_array_equal(out_mask, out_ids != 0)
