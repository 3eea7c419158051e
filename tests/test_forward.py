"""kid.models.forward: target logits for both layouts, batch builders, variable splits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_fixtures import EOS, FAMILIES, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid.models import forward as fwd


@pytest.mark.parametrize("family", FAMILIES)
def test_target_logits_equal_sliced_full_logits(family):
    module = tiny_module(family)
    variables = tiny_variables(module)
    batch = make_batch(family, *random_rows(0))
    logits = fwd.forward(module, variables, batch)
    targets, mask = fwd.targets_and_mask(batch)
    if family == "t5":
        full = module.apply(
            variables,
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch["decoder_attention_mask"],
        )
        expected, expected_targets, expected_mask = full, batch["targets"], batch["loss_mask"]
    else:
        full = module.apply(variables, batch["input_ids"], batch["attention_mask"])
        p, t = (
            batch["prompt_ids"].shape[1],
            batch["input_ids"].shape[1] - batch["prompt_ids"].shape[1],
        )
        # The logit at column i predicts input column i + 1; targets are columns P .. P+T-1.
        expected = full[:, p - 1 : p + t - 1]
        expected_targets = batch["input_ids"][:, p:]
        expected_mask = batch["attention_mask"][:, p:]
        np.testing.assert_array_equal(fwd.forward(module, variables, batch, logits_at="all"), full)
    assert logits.shape == targets.shape + (module.config.vocab_size,)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(
        np.where(mask > 0, targets, PAD), np.where(expected_mask, expected_targets, PAD)
    )
    np.testing.assert_array_equal(mask > 0, expected_mask > 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_does_not_change_target_logits(family):
    """A row's target logits are the same alone and in a padded batch."""
    module = tiny_module(family)
    variables = tiny_variables(module, seed=1)
    prompts, targets = random_rows(1)
    batch = make_batch(family, prompts, targets)
    together = fwd.forward(module, variables, batch)
    for row in range(len(prompts)):
        n = len(targets[row])
        alone = make_batch(
            family,
            prompts[row : row + 1],
            targets[row : row + 1],
            prompt_len=len(prompts[row]),
            target_len=n,
        )
        np.testing.assert_allclose(
            fwd.forward(module, variables, alone)[0], together[row, :n], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    "family, overrides",
    [("t5", {}), ("decoder", {}), ("decoder", {"tie_word_embeddings": False})],
)
def test_bf16_compute_gives_fp32_accumulated_logits(family, overrides):
    """fp32 logits from bf16 compute are fp32 sums of bf16 products, not bf16 values upcast."""
    module = tiny_module(family, dtype=jnp.bfloat16, logits_dtype=jnp.float32, **overrides)
    variables = tiny_variables(module)
    batch = make_batch(family, *random_rows(2))
    logits = np.asarray(
        jax.jit(lambda v, b: fwd.forward(module, v, b, logits_at="all"))(variables, batch)
    )
    assert logits.dtype == np.float32
    assert np.mean(logits != logits.astype(jnp.bfloat16).astype(np.float32)) > 0.5
    # The head alone on bf16 hidden states equals an fp32 head with bf16-rounded weights.
    width = module.config.d_model if family == "t5" else module.config.hidden_size
    hidden = jax.random.normal(jax.random.key(0), (4, width)).astype(jnp.bfloat16)
    head = np.asarray(module.apply(variables, hidden, method="output_head"))
    rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), variables)
    reference = tiny_module(family, **overrides).apply(
        rounded, hidden.astype(jnp.float32), method="output_head"
    )
    np.testing.assert_allclose(head, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_with_targets_equals_a_batch_built_from_the_new_targets(family):
    prompts, targets = random_rows(4)
    batch = make_batch(family, prompts, targets, weights=[1.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    new = [np.append(rng.integers(3, 100, len(t) - 1), EOS) for t in targets]
    width = batch["targets"].shape[1] if family == "t5" else batch["input_ids"].shape[1] - 8
    new_dense = np.full((len(new), width), 77, np.int32)  # 77 at padding: must be ignored
    for row, t in enumerate(new):
        new_dense[row, : len(t)] = t
    got = jax.jit(fwd.with_targets)(batch, new_dense)
    expected = make_batch(family, prompts, new, weights=[1.0, 0.0, 1.0])
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_batch_equals_a_batch_built_from_the_continuations(family):
    prompts, targets = random_rows(5)
    batch = make_batch(family, prompts, targets, weights=[1.0, 1.0, 0.0])
    tokens = np.array(
        [[5, 6, EOS, PAD, PAD], [7, 8, 9, 10, 11], [EOS, PAD, PAD, PAD, PAD]], np.int32
    )
    lengths = np.array([3, 5, 1], np.int32)

    class Decoded:  # the two fields of kid.decoding.Decoded that are read
        pass

    decoded = Decoded()
    decoded.tokens, decoded.lengths = tokens, lengths
    got = fwd.continuation_batch(batch, decoded, pad_id=PAD)
    rows = [tokens[i, : lengths[i]] for i in range(3)]
    expected = make_batch(family, prompts, rows, weights=[1.0, 1.0, 0.0], target_len=5)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_layout_mismatch_is_an_error():
    module = tiny_module("t5")
    with pytest.raises(ValueError, match="encoder-decoder model was given a decoder-only batch"):
        fwd.forward(module, tiny_variables(module), make_batch("decoder", *random_rows(0)))


def test_split_and_join_variables():
    variables = {"params": {"w": 1}, "lora": {"a": 2}}
    trainable, frozen = fwd.split_variables(variables, "lora")
    assert trainable == {"a": 2} and frozen == {"params": {"w": 1}}
    assert fwd.join_variables(trainable, frozen, "lora") == variables
    trainable, frozen = fwd.split_variables(variables)
    assert trainable == {"w": 1} and frozen == {"lora": {"a": 2}}
    with pytest.raises(ValueError, match="no 'lora' collection"):
        fwd.split_variables({"params": {}}, "lora")
    with pytest.raises(ValueError, match="must be one of"):
        fwd.split_variables(variables, "adapters")
