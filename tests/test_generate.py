"""generate() on kid's models: parity with transformers' PyTorch generate on identical weights,
beam search, forced and teacher-guided decoding on real (tiny, random) models."""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from model_helpers import random_params, uncached_logits

from kid import decoding, models

VOCAB, NEW_TOKENS = 96, 12
# Left-padded prompts for decoder-only models (T5 gets the same tokens right-padded).
PROMPTS = np.array(
    [[0, 0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 11, 12], [0, 40, 41, 3, 9, 9, 2]]
)
PROMPT_MASK = (np.arange(7) >= np.array([[3], [0], [5], [1]])).astype(np.int32)


def right_padded(ids, mask):
    order = np.argsort(~mask.astype(bool), axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(mask, order, 1)


@functools.cache
def kid_model(name: str, seed: int = 1):
    """A tiny kid model with random weights large enough that logits are far from uniform."""
    module = models.build(models.get_config(name))
    return module, random_params(module, seed)


@functools.cache
def hf_and_kid(name: str, tmp_root: str):
    """A kid model and transformers' PyTorch model on the same weights (through save_hf)."""
    module, params = kid_model(name)
    path = models.save_hf(module, params, pathlib.Path(tmp_root) / name)
    auto = (
        transformers.AutoModelForSeq2SeqLM
        if models.is_encoder_decoder(module)
        else transformers.AutoModelForCausalLM
    )
    return auto.from_pretrained(path).eval(), module, params


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf"))


def prompts(module):
    if models.is_encoder_decoder(module):
        return right_padded(PROMPTS, PROMPT_MASK)
    return PROMPTS, PROMPT_MASK


STATIC = ("max_new_tokens", "method", "temperature", "top_k", "top_p", "eos_id", "pad_id")


@functools.partial(
    jax.jit, static_argnums=0, static_argnames=STATIC + ("num_beams", "length_penalty")
)
def run_generate(module, params, ids, mask, **kwargs):
    return decoding.generate(module, params, ids, mask, **kwargs)


def mid_way_token(tokens: np.ndarray) -> int:
    """A token first emitted mid-way by some row, present in as many rows as possible: as EOS,
    rows finish at different steps."""
    first = [{t: i for i, t in reversed(list(enumerate(row)))} for row in tokens]
    candidates = {t for row in first for t, i in row.items() if i >= 2}
    return int(max(sorted(candidates), key=lambda t: sum(t in row for row in first)))


@pytest.mark.parametrize("name", ["t5-tiny", "t5v1_1-tiny", "qwen2-tiny", "llama-tiny"])
def test_greedy_matches_transformers(name, tmp_root):
    hf, module, params = hf_and_kid(name, tmp_root)
    ids, mask = prompts(module)
    free = run_generate(module, params, ids, mask, max_new_tokens=NEW_TOKENS, eos_id=-1)
    free_tokens = np.asarray(free.tokens)
    eos = mid_way_token(free_tokens)
    ours = run_generate(module, params, ids, mask, max_new_tokens=NEW_TOKENS, eos_id=eos, pad_id=0)
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            use_cache=False,  # transformers 5.23 sizes T5's cache by the encoder's depth
            max_new_tokens=NEW_TOKENS,
            eos_token_id=eos,
            pad_token_id=0,
        ).numpy()
    theirs = theirs[:, 1:] if models.is_encoder_decoder(module) else theirs[:, ids.shape[1] :]
    theirs = np.pad(theirs, ((0, 0), (0, NEW_TOKENS - theirs.shape[1])))  # HF stops early
    tokens = np.asarray(ours.tokens)
    np.testing.assert_array_equal(tokens, theirs)
    assert (tokens == eos).sum(1).max() == 1  # EOS emitted once, pad after
    assert len(set(np.asarray(ours.lengths))) > 1  # rows finish at different steps
    # The comparison is meaningful: greedy choices are not near-ties; and the cached loop
    # reproduces the uncached forward pass, log-probabilities included.
    logits = uncached_logits(module, {"params": params}, ids, mask, free_tokens)
    top2 = np.sort(logits, -1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-3
    np.testing.assert_array_equal(free_tokens, logits.argmax(-1))
    logprobs = np.take_along_axis(jax.nn.log_softmax(logits), free_tokens[..., None], -1)
    np.testing.assert_allclose(free.logprobs, logprobs[..., 0], atol=1e-4)


# EOS ids among the early greedy tokens, so that some (not all) beams end with EOS.
@pytest.mark.parametrize(
    "name,eos,alpha", [("t5-tiny", 48, 1.0), ("qwen2-tiny", 33, 1.0), ("qwen2-tiny", 33, 0.0)]
)
def test_beam_search_matches_transformers(name, eos, alpha, tmp_root):
    hf, module, params = hf_and_kid(name, tmp_root)
    ids, mask = prompts(module)
    ours = run_generate(
        module, params, ids, mask, max_new_tokens=8, method="beam", num_beams=3, eos_id=eos,
        pad_id=0, length_penalty=alpha,
    )  # fmt: skip
    assert (np.asarray(ours.lengths) < 8).any()  # some beams finish with EOS
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            use_cache=False,
            num_beams=3,
            num_return_sequences=3,
            early_stopping="never",
            length_penalty=alpha,
            max_new_tokens=8,
            eos_token_id=eos,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    seqs = theirs.sequences.numpy()
    seqs = seqs[:, 1:] if models.is_encoder_decoder(module) else seqs[:, ids.shape[1] :]
    seqs = np.pad(seqs, ((0, 0), (0, 8 - seqs.shape[1]))).reshape(len(ids), 3, 8)
    after_eos = np.cumsum(seqs == eos, -1) - (seqs == eos) > 0
    seqs[after_eos] = 0  # transformers repeats EOS there, kid writes pad
    np.testing.assert_array_equal(np.asarray(ours.beams), seqs)
    np.testing.assert_allclose(
        np.asarray(ours.scores), theirs.sequences_scores.numpy().reshape(len(ids), 3), atol=1e-4
    )


def test_one_beam_equals_greedy_on_a_model():
    module, params = kid_model("qwen2-tiny")
    greedy = run_generate(module, params, PROMPTS, PROMPT_MASK, max_new_tokens=NEW_TOKENS, eos_id=5)
    beam = run_generate(
        module, params, PROMPTS, PROMPT_MASK, max_new_tokens=NEW_TOKENS, eos_id=5,
        method="beam", num_beams=1, length_penalty=0.0,
    )  # fmt: skip
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)


@pytest.mark.parametrize("name", ["t5-tiny", "qwen2-tiny"])
def test_forced_decoding_free_tokens_are_argmax_of_uncached_forward(name):
    module, params = kid_model(name)
    ids, mask = prompts(module)
    rng = np.random.default_rng(0)
    forced_tokens = rng.integers(2, VOCAB, size=(len(ids), NEW_TOKENS))
    forced_mask = rng.random((len(ids), NEW_TOKENS)) < 0.4
    out = run_generate(
        module, params, ids, mask, max_new_tokens=NEW_TOKENS, eos_id=-1,
        forced_tokens=forced_tokens, forced_mask=forced_mask,
    )  # fmt: skip
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[forced_mask], forced_tokens[forced_mask])
    logits = uncached_logits(module, {"params": params}, ids, mask, tokens)
    np.testing.assert_array_equal(tokens[~forced_mask], logits.argmax(-1)[~forced_mask])
    assert (tokens[~forced_mask] != forced_tokens[~forced_mask]).any()


def ended(free: np.ndarray, may_end: np.ndarray, stops, pad_id: int):
    """The reference (tokens, lengths): rows of `free` [batch, new] (decoded without stopping)
    cut after their first stop token where `may_end` [batch, new] allows it, pad after."""
    ends = np.isin(free, stops) & may_end
    lengths = np.where(ends.any(1), ends.argmax(1) + 1, free.shape[1])
    return np.where(np.arange(free.shape[1]) < lengths[:, None], free, pad_id), lengths


@pytest.mark.parametrize("name", ["t5-tiny", "qwen2-tiny"])
def test_forced_decoding_keeps_every_forced_token(name):
    """A free position predicting EOS before the row's last forced position keeps it and the
    row goes on; after the last forced position (or with none) a row ends at EOS."""
    module, params = kid_model(name)
    ids, mask = prompts(module)
    forced_tokens = np.random.default_rng(1).integers(2, VOCAB, size=(len(ids), NEW_TOKENS))
    forced_mask = np.ones((len(ids), NEW_TOKENS), bool)
    forced_mask[0, [1, 5]] = False  # forced to the end, two free positions
    forced_mask[1, 3] = False
    forced_mask[2, 6:] = False  # a forced prefix, then free
    forced_mask[3] = False  # no forced position: plain greedy
    run = functools.partial(
        run_generate, module, params, ids, mask, max_new_tokens=NEW_TOKENS, pad_id=0,
        forced_tokens=forced_tokens, forced_mask=forced_mask,
    )  # fmt: skip
    free = np.asarray(run(eos_id=-1).tokens)
    # Stop tokens the model chooses: at a free position before forced ones, in a free tail
    # and in the unforced row.
    stops = tuple(int(t) for t in (free[0, 1], free[2, 8], free[3, 2]))
    out = run(eos_id=stops)
    last_forced = np.array([np.flatnonzero(row).max(initial=-1) for row in forced_mask])
    may_end = np.arange(NEW_TOKENS) >= last_forced[:, None]
    expected, lengths = ended(free, may_end, stops, pad_id=0)
    np.testing.assert_array_equal(out.tokens, expected)
    np.testing.assert_array_equal(out.lengths, lengths)
    np.testing.assert_array_equal(out.lengths[:2], NEW_TOKENS)
    assert out.tokens[0, 1] in stops and 6 <= out.lengths[2] < NEW_TOKENS
    plain = run_generate(
        module, params, ids, mask, max_new_tokens=NEW_TOKENS, eos_id=stops, pad_id=0
    )
    np.testing.assert_array_equal(out.tokens[3], plain.tokens[3])
    assert out.lengths[3] < NEW_TOKENS


def test_config_with_several_eos_ids_stops_on_any():
    """A Llama 3 style config (eos_token_id a tuple): rows end on either id, beams too."""
    module, params = kid_model("qwen2-tiny")
    args = (params, PROMPTS, PROMPT_MASK)
    free = np.asarray(run_generate(module, *args, max_new_tokens=NEW_TOKENS, eos_id=-1).tokens)
    first = mid_way_token(free)
    stops = (first, mid_way_token(free[~(free == first).any(1)]))
    module = models.build(dataclasses.replace(module.config, eos_token_id=stops))
    greedy = run_generate(module, *args, max_new_tokens=NEW_TOKENS, pad_id=0)
    expected, lengths = ended(free, np.ones_like(free, bool), stops, pad_id=0)
    np.testing.assert_array_equal(greedy.tokens, expected)
    np.testing.assert_array_equal(greedy.lengths, lengths)
    assert set(stops) <= set(expected[np.arange(len(free)), lengths - 1])  # each id ends a row
    beam = run_generate(
        module, *args, max_new_tokens=NEW_TOKENS, pad_id=0, method="beam", num_beams=1,
        length_penalty=0.0,
    )  # fmt: skip
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)


@pytest.mark.parametrize("forced", ["forced_tokens", "forced_mask"])
def test_beam_search_refuses_forced_positions(forced):
    module, params = kid_model("qwen2-tiny")
    with pytest.raises(ValueError, match="not beam search"):
        decoding.generate(
            module, params, PROMPTS, PROMPT_MASK, max_new_tokens=NEW_TOKENS, method="beam",
            **{forced: np.zeros((len(PROMPTS), NEW_TOKENS), np.int32)},
        )  # fmt: skip


def test_sampling_respects_top_k_on_a_model():
    module, params = kid_model("llama-tiny")
    out = run_generate(
        module, params, PROMPTS, PROMPT_MASK, max_new_tokens=NEW_TOKENS, eos_id=-1,
        method="sample", rng=jax.random.key(0), top_k=3, temperature=2.0,
    )  # fmt: skip
    tokens = np.asarray(out.tokens)
    logits = uncached_logits(module, {"params": params}, PROMPTS, PROMPT_MASK, tokens)
    rank = (logits > np.take_along_axis(logits, tokens[..., None], -1)).sum(-1)
    assert rank.max() < 3 and rank.max() > 0  # sampled, not greedy, and inside the top 3


def test_guided_decoding_on_models():
    student, student_params = kid_model("qwen2-tiny")
    teacher, teacher_params = kid_model("llama-tiny")
    out = jax.jit(
        functools.partial(
            decoding.generate_guided, student, teacher=teacher, teacher_top_k=3,
            max_new_tokens=NEW_TOKENS, eos_id=-1,
        )  # fmt: skip
    )(student_params, teacher_params=teacher_params, input_ids=PROMPTS,
      attention_mask=PROMPT_MASK, rng=jax.random.key(1))  # fmt: skip
    tokens, replaced = np.asarray(out.tokens), np.asarray(out.replaced)
    assert 0 < replaced.mean() < 1
    teacher_logits = uncached_logits(
        teacher, {"params": teacher_params}, PROMPTS, PROMPT_MASK, tokens
    )
    kth = np.sort(teacher_logits, -1)[..., -3]
    in_top_k = np.take_along_axis(teacher_logits, tokens[..., None], -1)[..., 0] >= kth
    assert (in_top_k | replaced).all()
    student_logits = uncached_logits(
        student, {"params": student_params}, PROMPTS, PROMPT_MASK, tokens
    )
    expected = np.take_along_axis(jax.nn.log_softmax(student_logits), tokens[..., None], -1)
    np.testing.assert_allclose(out.logprobs, expected[..., 0], atol=1e-4)


def test_generate_inside_a_differentiated_loss():
    """An on-policy loss samples with the parameters it differentiates (GKD-style)."""
    module, params = kid_model("qwen2-tiny")

    def loss(params, rng):
        out = decoding.generate(
            module, params, PROMPTS, PROMPT_MASK, max_new_tokens=4, method="sample", rng=rng
        )
        full = np.concatenate([PROMPTS, np.zeros((4, 4), np.int32)], 1)
        ids = jnp.asarray(full).at[:, -4:].set(out.tokens)
        mask = np.concatenate([PROMPT_MASK, np.ones((4, 4), np.int32)], 1)
        logits = module.apply({"params": params}, ids, mask)[:, -5:-1]
        logprobs = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logprobs, out.tokens[..., None], -1)[..., 0]
        return (nll * jnp.exp(out.logprobs)).sum()  # weights from the sampler: constants

    grads = jax.jit(jax.grad(loss))(params, jax.random.key(0))
    norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0
