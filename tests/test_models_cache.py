"""The decode cache: prefill + step-by-step decoding reproduces the full forward pass."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import jitted_apply, random_params, uncached_logits

from kid import models

PROMPTS = np.array([[0, 0, 5, 6, 7, 8, 9], [3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 11, 12, 13]])
PROMPT_MASK = (PROMPTS > 0).astype(np.int32)


def _model(name: str, **overrides):
    module = models.build(models.get_config(name, **overrides))
    return module, {"params": random_params(module)}


@pytest.mark.parametrize(("name", "scan"), [("llama-tiny", False), ("qwen2-tiny", True)])
def test_decoder_cache_matches_full_forward(name, scan):
    module, variables = _model(name, scan_layers=scan)
    apply = jitted_apply(module)
    full = np.asarray(apply(variables, PROMPTS, PROMPT_MASK))
    prefix = 3  # Prefill the first 3 columns, then feed the rest one token at a time.
    logits, cache = apply(
        variables, PROMPTS[:, :prefix], PROMPT_MASK[:, :prefix], max_new_tokens=4, method="prefill"
    )
    steps = [logits]
    for t in range(prefix, PROMPTS.shape[1]):
        step, cache = apply(
            variables, PROMPTS[:, t : t + 1], cache, PROMPT_MASK[:, t : t + 1], method="decode"
        )
        steps.append(step[:, 0])
    assert int(cache.index) == PROMPTS.shape[1]
    incremental = np.stack(steps, axis=1)
    real = PROMPT_MASK[:, prefix - 1 :].astype(bool)  # Padding positions have no meaning.
    assert full.std(axis=-1).mean() > 0.5  # Far from uniform: the comparison is not vacuous.
    np.testing.assert_allclose(incremental[real], full[:, prefix - 1 :][real], atol=1e-4)


def test_t5_cache_matches_full_forward():
    module, variables = _model("t5v1_1-tiny")
    apply = jitted_apply(module)
    decoder_ids = np.array([[0, 21, 22, 23, 24], [0, 31, 32, 33, 34], [0, 41, 42, 43, 44]])
    full = np.asarray(apply(variables, PROMPTS, PROMPT_MASK, decoder_ids))
    logits, cache = apply(variables, PROMPTS, PROMPT_MASK, max_new_tokens=4, method="prefill")
    steps = [logits[:, None]]
    # A chunk of two decoder tokens, then single tokens: the encoder output is reused.
    chunk, cache = apply(variables, decoder_ids[:, 1:3], cache, method="decode")
    steps.append(chunk)
    for t in range(3, 5):
        step, cache = apply(variables, decoder_ids[:, t : t + 1], cache, method="decode")
        steps.append(step)
    assert full.std(axis=-1).mean() > 0.5  # Far from uniform: the comparison is not vacuous.
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def test_cache_take_and_repeat_reorder_rows():
    module, variables = _model("llama-tiny")
    apply = jitted_apply(module)
    _, cache = apply(variables, PROMPTS, PROMPT_MASK, max_new_tokens=2, method="prefill")
    repeated = cache.repeat(2)
    assert repeated.keys.shape[1] == 2 * PROMPTS.shape[0]
    np.testing.assert_array_equal(repeated.mask[::2], cache.mask)
    np.testing.assert_array_equal(repeated.values[:, 1::2], cache.values)
    rows = jnp.array([2, 0])
    taken = cache.take(rows)
    np.testing.assert_array_equal(taken.keys, cache.keys[:, rows])
    # Decoding from a reordered cache equals decoding those rows from the original.
    token = jnp.array([[7], [8], [9]])
    step, _ = apply(variables, token, cache, method="decode")
    step_taken, _ = apply(variables, token[rows], taken, method="decode")
    np.testing.assert_allclose(step_taken, step[rows], atol=1e-5)


def test_reorder_beams_equals_take_within_each_example():
    """Beam search reorders rows within an example's beams: gathering only the
    self-attention side gives the same cache as gathering everything."""
    module, variables = _model("t5-tiny")
    _, cache = jitted_apply(module)(
        variables, PROMPTS, PROMPT_MASK, max_new_tokens=2, method="prefill"
    )
    beams = cache.repeat(2)
    rows = jnp.array([1, 1, 3, 2, 4, 4])  # beam parents, each within its own example
    reordered, taken = beams.reorder_beams(rows), beams.take(rows)
    for got, want in zip(jax.tree.leaves(reordered), jax.tree.leaves(taken), strict=True):
        np.testing.assert_array_equal(got, want)
    assert reordered.cross_keys is beams.cross_keys  # not gathered again


@pytest.mark.parametrize(("name", "scan"), [("qwen2-tiny", False), ("t5-tiny", True)])
def test_decode_inside_scan_matches_full_forward(name, scan):
    """The cache is a scan carry: greedy decoding as one jitted lax.scan gives, at every
    step, the logits of an uncached forward pass over the decoded prefix."""
    module, variables = _model(name, scan_layers=scan)
    steps = 3

    @jax.jit
    def greedy(variables):
        logits, cache = module.apply(
            variables, PROMPTS, PROMPT_MASK, max_new_tokens=steps, method="prefill"
        )

        def step(carry, _):
            logits, cache = carry
            token = jnp.argmax(logits, axis=-1)[:, None]
            next_logits, cache = module.apply(variables, token, cache, method="decode")
            return (next_logits[:, 0], cache), (token[:, 0], logits)

        _, (tokens, logits) = jax.lax.scan(step, (logits, cache), length=steps)
        return tokens.T, jnp.swapaxes(logits, 0, 1)  # [B, steps], [B, steps, V]

    tokens, logits = greedy(variables)
    full = uncached_logits(module, variables, PROMPTS, PROMPT_MASK, np.asarray(tokens))
    np.testing.assert_allclose(logits, full, atol=1e-4)


@pytest.mark.parametrize(("name", "scan"), [("qwen2-tiny", False), ("t5-tiny", True)])
def test_compiled_decode_step_does_not_copy_the_cache(name, scan):
    """Layers update the stacked cache in place: the compiled decode step (cache donated) holds
    no copy of a whole cache array, which would cost O(cache size) per generated token."""
    module, variables = _model(name, scan_layers=scan)
    _, cache = jitted_apply(module)(
        variables, PROMPTS, PROMPT_MASK, max_new_tokens=4, method="prefill"
    )
    step = jax.jit(functools.partial(module.apply, method="decode"), donate_argnums=2)
    hlo = step.lower(variables, PROMPTS[:, :1], cache).compile().as_text()
    for array in (cache.keys, cache.cross_keys):
        if array is not None:
            dims = ",".join(map(str, array.shape))
            assert re.search(rf"\[{dims}\]", hlo), f"no [{dims}] array in the HLO"
            copies = re.findall(rf"= \w+\[{dims}\]\S* copy\(", hlo)
            assert not copies, f"{len(copies)} copies of a [{dims}] cache array"
