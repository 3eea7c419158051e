import numpy as np
import pytest

from kid.data import batching

PAD = 0


def _rows():
    prompts = [np.array([11, 12, 13]), np.array([21])]
    targets = [np.array([31, 32, 1]), np.array([41, 1])]
    return prompts, targets, np.array([1.0, 0.0]), np.array([7, -1])


def test_encoder_decoder_layout():
    prompts, targets, weights, index = _rows()
    b = batching.encoder_decoder_batch(
        prompts,
        targets,
        weights,
        index,
        prompt_len=4,
        target_len=4,
        pad_id=PAD,
        decoder_start_id=PAD,
    )
    np.testing.assert_array_equal(b["input_ids"], [[11, 12, 13, 0], [21, 0, 0, 0]])
    np.testing.assert_array_equal(b["attention_mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(b["targets"], [[31, 32, 1, 0], [41, 1, 0, 0]])
    np.testing.assert_array_equal(b["decoder_input_ids"], [[0, 31, 32, 0], [0, 41, 0, 0]])
    np.testing.assert_array_equal(b["decoder_attention_mask"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(b["loss_mask"], [[1, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(b["weights"], [1, 0])
    np.testing.assert_array_equal(b["example_index"], [7, -1])
    assert b["input_ids"].dtype == np.int32 and b["loss_mask"].dtype == np.float32


def test_decoder_only_layout():
    prompts, targets, weights, index = _rows()
    b = batching.decoder_only_batch(
        prompts, targets, np.ones(2), index, prompt_len=4, target_len=4, pad_id=PAD
    )
    np.testing.assert_array_equal(b["prompt_ids"], [[0, 11, 12, 13], [0, 0, 0, 21]])
    np.testing.assert_array_equal(b["prompt_mask"], [[0, 1, 1, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(
        b["input_ids"], [[0, 11, 12, 13, 31, 32, 1, 0], [0, 0, 0, 21, 41, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        b["attention_mask"], [[0, 1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        b["positions"], [[0, 0, 1, 2, 3, 4, 5, 5], [0, 0, 0, 0, 1, 2, 2, 2]]
    )
    # targets[i] is the token after i; the loss covers the predictions of target tokens.
    np.testing.assert_array_equal(
        b["targets"], [[11, 12, 13, 31, 32, 1, 0, 0], [0, 0, 21, 41, 1, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        b["loss_mask"], [[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0]]
    )
    ids, mask = batching.prompt_arrays(b)
    assert ids is b["prompt_ids"] and mask is b["prompt_mask"]


def test_positions_are_cumsum_of_mask_minus_one_on_real_tokens():
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 50, n) for n in (1, 5, 8)]
    targets = [rng.integers(2, 50, n) for n in (3, 1, 6)]
    b = batching.decoder_only_batch(
        prompts, targets, np.ones(3), np.arange(3), prompt_len=8, target_len=8, pad_id=PAD
    )
    m = b["attention_mask"].astype(bool)
    np.testing.assert_array_equal(b["positions"][m], (np.cumsum(b["attention_mask"], 1) - 1)[m])
    for row in range(3):  # every row's real tokens are contiguous and start at position 0
        assert list(b["positions"][row][m[row]]) == list(range(m[row].sum()))


def test_loss_mask_weighs_rows():
    prompts, targets, _, index = _rows()
    b = batching.decoder_only_batch(
        prompts, targets, np.array([0.5, 0.0]), index, prompt_len=3, target_len=3, pad_id=PAD
    )
    assert b["loss_mask"].sum(axis=1).tolist() == [1.5, 0.0]


def test_too_long_is_an_error():
    with pytest.raises(ValueError, match="prompt of row 0 has 3 tokens, more than 2"):
        batching.decoder_only_batch(*_rows(), prompt_len=2, target_len=4, pad_id=PAD)


def test_bucket():
    assert [batching.bucket(n, (64, 16, 32)) for n in (1, 16, 17, 64)] == [16, 16, 32, 64]
    with pytest.raises(ValueError, match="exceeds the largest bucket 64"):
        batching.bucket(65, (16, 64))
