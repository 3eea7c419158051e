"""kid.models.configs: derived head widths, the embedded-benchmark presets, and the checks
that keep a model's vocabulary and special ids in line with the tokenizer's."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from kid import models
from kid.models import configs

# Head widths of every preset before they were derived: presets must keep them.
PRESET_HEAD_WIDTHS = {
    "t5-tiny": 8,
    "t5v1_1-tiny": 8,
    "llama-tiny": 8,
    "qwen2-tiny": 8,
    "t5-small": 64,
    "t5-base": 64,
    "flan-t5-small": 64,
    "flan-t5-base": 64,
    "tinyllama-1.1b": 64,
    "llama2-7b": 128,
    "qwen2.5-0.5b": 64,
    "qwen2.5-1.5b": 128,
}


def _head_width(config) -> int:
    return config.d_kv if isinstance(config, configs.T5Config) else config.head_dim


@pytest.mark.parametrize("name, width", sorted(PRESET_HEAD_WIDTHS.items()))
def test_presets_keep_their_head_widths(name, width):
    assert _head_width(models.get_config(name)) == width


def test_head_width_defaults_to_width_over_heads():
    assert configs.T5Config(d_model=128, num_heads=4).d_kv == 32  # was 64 whatever the width
    assert configs.T5Config(d_model=128, num_heads=4, d_kv=16).d_kv == 16
    decoder = configs.DecoderConfig(hidden_size=96, num_attention_heads=6, num_key_value_heads=2)
    assert decoder.head_dim == 16
    assert configs.DecoderConfig(hidden_size=96, num_attention_heads=6, head_dim=8).head_dim == 8
    # A resolved width survives replace; None derives it again.
    wide = dataclasses.replace(configs.T5Config(d_model=128, num_heads=4), d_model=256, d_kv=None)
    assert wide.d_kv == 64


def test_indivisible_width_needs_an_explicit_head_width():
    with pytest.raises(ValueError, match="d_model 100 is not divisible by num_heads 3"):
        configs.T5Config(d_model=100, num_heads=3)
    with pytest.raises(ValueError, match="hidden_size 100 is not divisible by num_attention_heads"):
        configs.DecoderConfig(hidden_size=100, num_attention_heads=3, num_key_value_heads=1)
    assert configs.T5Config(d_model=100, num_heads=3, d_kv=32).d_kv == 32


def _num_params(name: str, vocab_size: int) -> int:
    module = models.build(models.get_config(name, vocab_size=vocab_size))
    shapes, _ = models.param_axes(module)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_synth_presets_sizes(family):
    teacher = models.get_config(f"{family}-synth-teacher")
    student = models.get_config(f"{family}-synth-student")
    assert _head_width(teacher) == 32 and _head_width(student) == 16
    big = _num_params(f"{family}-synth-teacher", 4096)
    small = _num_params(f"{family}-synth-student", 4096)
    assert 1.7e6 < big < 2.0e6
    assert 2.5 < big / small < 4.5  # Llama's untied embeddings keep its student near 3x
    if family == "t5":
        assert (teacher.feed_forward_proj, teacher.tie_word_embeddings) == ("relu", True)
        assert teacher.dropout_rate == student.dropout_rate == 0.1
    else:
        assert teacher.num_key_value_heads == student.num_key_value_heads == 2
        assert teacher.max_position_embeddings == student.max_position_embeddings == 1024


def test_for_tokenizer_sets_vocabulary_and_ids():
    t5 = configs.for_tokenizer(
        models.get_config("t5-synth-student"), vocab_size=3073, pad_id=0, eos_id=1
    )
    assert (t5.vocab_size, t5.pad_token_id, t5.eos_token_id, t5.decoder_start_token_id) == (
        3073,
        0,
        1,
        0,
    )
    padded = configs.for_tokenizer(
        models.get_config("t5-synth-student"),
        vocab_size=3073,
        pad_id=5,
        eos_id=1,
        pad_to_multiple=128,
    )
    assert (padded.vocab_size, padded.decoder_start_token_id) == (3200, 5)  # T5 starts at pad
    llama = configs.for_tokenizer(
        models.get_config("llama-synth-teacher"),
        vocab_size=32001,
        pad_id=2,
        eos_id=(2, 7),
        bos_id=1,
        pad_to_multiple=64,
    )
    assert (llama.vocab_size, llama.pad_token_id, llama.eos_token_id, llama.bos_token_id) == (
        32064,
        2,
        (2, 7),
        1,
    )
    assert llama.head_dim == 32 and llama.hidden_size == 128  # the rest is untouched


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vocab_size=0, pad_id=0, eos_id=1), "vocab_size must be a positive integer"),
        (dict(vocab_size=10, pad_id=10, eos_id=1), "pad_id 10 is not an id below vocab_size 10"),
        (dict(vocab_size=10, pad_id=0, eos_id=(1, 12)), "eos_id 12 is not an id below"),
        (dict(vocab_size=10, pad_id=0, eos_id=()), "eos_id must be a token id"),
        (dict(vocab_size=10, pad_id=0, eos_id=1, bos_id=-1), "bos_id -1 is not an id"),
        (dict(vocab_size=10, pad_id=0, eos_id=1, pad_to_multiple=0), "pad_to_multiple must be"),
    ],
)
def test_for_tokenizer_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        configs.for_tokenizer(models.get_config("llama-synth-student"), **kwargs)


def test_for_tokenizer_refuses_a_t5_bos():
    with pytest.raises(ValueError, match="bos_id must be None for T5"):
        configs.for_tokenizer(
            models.get_config("t5-synth-student"), vocab_size=10, pad_id=0, eos_id=1, bos_id=2
        )


def test_check_tokenizer_agrees():
    t5 = models.get_config("t5-synth-teacher", vocab_size=3200)
    configs.check_tokenizer_agrees(t5, vocab_size=3073, pad_id=0, eos_id=1, decoder_start_id=0)
    with pytest.raises(ValueError, match="model decoder_start_token_id 0 but data decoder_start"):
        configs.check_tokenizer_agrees(t5, vocab_size=3073, pad_id=0, eos_id=1, decoder_start_id=1)
    with pytest.raises(ValueError, match="model vocab_size 3200 .* but data vocab_size 3201"):
        configs.check_tokenizer_agrees(t5, vocab_size=3201, pad_id=0, eos_id=1)
    with pytest.raises(ValueError, match="model eos_token_id 1 but data eos_id 2"):
        configs.check_tokenizer_agrees(t5, vocab_size=3073, pad_id=0, eos_id=2)
    with pytest.raises(ValueError, match="data pad_id 5000 is not an id below model vocab_size"):
        configs.check_tokenizer_agrees(t5, vocab_size=3073, pad_id=5000, eos_id=1)
    llama = models.get_config("llama-synth-teacher", eos_token_id=(1, 2))
    configs.check_tokenizer_agrees(llama, vocab_size=4096, pad_id=0, eos_id=2, decoder_start_id=9)
    with pytest.raises(ValueError, match=r"model eos_token_id None but data eos_id 1"):
        configs.check_tokenizer_agrees(
            dataclasses.replace(llama, eos_token_id=None), vocab_size=4096, pad_id=0, eos_id=1
        )
