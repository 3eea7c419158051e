"""Parity with transformers (PyTorch) and the Hugging Face round trip, both families."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import transformers
from hf_fixtures import CASES, batch, is_t5, real_positions, save_checkpoint, torch_logits
from model_helpers import jitted_apply

from kid import models


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    """(case name, the PyTorch model, its saved directory, kid's module and params)."""
    name = request.param
    directory = tmp_path_factory.mktemp(name) / "hf"
    model = save_checkpoint(name, directory)
    module, params = models.load_hf(directory)
    return name, model, directory, module, params


def _kid_logits(module, params, inputs) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        return np.asarray(jitted_apply(module)({"params": params}, **inputs))


def test_logits_match_transformers(checkpoint):
    name, model, _, module, params = checkpoint
    inputs = batch(name)
    expected = torch_logits(model, name, inputs)
    actual = _kid_logits(module, params, inputs)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    real = real_positions(name, inputs)
    assert expected[real].std(axis=-1).mean() > 1.0  # Far from uniform.
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-4, rtol=0)


def test_config_and_tying_read_from_checkpoint(checkpoint):
    name, model, _, module, params = checkpoint
    config = module.config
    assert config.tie_word_embeddings == (name in ("t5_v1_0", "llama_tied"))
    assert ("lm_head" in params) != config.tie_word_embeddings
    if is_t5(name):
        assert config.scale_decoder_outputs == (name == "t5_v1_0")
    else:
        assert config.num_key_value_heads == model.config.num_key_value_heads
        assert config.qkv_bias == (name == "qwen2")


def test_save_hf_round_trip(checkpoint, tmp_path):
    name, model, _, module, params = checkpoint
    out = models.save_hf(module, params, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # No temp left.
    reloaded = (
        transformers.AutoModelForSeq2SeqLM if is_t5(name) else transformers.AutoModelForCausalLM
    )
    torch_model = reloaded.from_pretrained(out, attn_implementation="eager").eval()
    inputs = batch(name)
    real = real_positions(name, inputs)
    np.testing.assert_allclose(
        torch_logits(torch_model, name, inputs)[real],
        torch_logits(model, name, inputs)[real],
        atol=1e-6,
        rtol=0,
    )
    _, params_again = models.load_hf(out)
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
