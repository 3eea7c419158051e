"""Parity with transformers (PyTorch) and the Hugging Face round trip, both families."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from hf_fixtures import CASES, batch, is_t5, real_positions, save_checkpoint, torch_logits
from model_helpers import jitted_apply
from safetensors.numpy import load_file, save_file

from kid import decoding, models


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


def test_scanned_layout_round_trip(checkpoint, tmp_path):
    """scan_layers=True stacks each layer tensor; saving unstacks it again; the layout
    converters match."""
    _, _, directory, _, params = checkpoint
    module, scanned = models.load_hf(directory, scan_layers=True)
    cfg = module.config
    if models.is_encoder_decoder(module):
        stack, layers = scanned["decoder"]["layers"], cfg.num_decoder_layers
    else:
        stack, layers = scanned["layers"], cfg.num_hidden_layers
    assert all(x.shape[0] == layers for x in jax.tree.leaves(stack))
    # The in-memory layout converters agree with the loader, both ways.
    jax.tree.map(np.testing.assert_array_equal, models.scan_params(params), scanned)
    jax.tree.map(np.testing.assert_array_equal, models.unscan_params(scanned), params)
    models.save_hf(module, scanned, tmp_path / "out")
    _, unscanned = models.load_hf(tmp_path / "out")
    jax.tree.map(np.testing.assert_array_equal, unscanned, params)


@pytest.fixture(scope="module")
def llama_tensors(tmp_path_factory):
    """(config.json dict, tensors) of a small Llama checkpoint, to corrupt."""
    directory = tmp_path_factory.mktemp("llama_src")
    save_checkpoint("llama_untied", directory)
    return json.loads((directory / "config.json").read_text()), load_file(
        directory / "model.safetensors"
    )


def _write(directory, config, tensors):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def test_unsupported_architecture_is_named(llama_tensors, tmp_path):
    config, tensors = llama_tensors
    path = _write(tmp_path / "ckpt", {**config, "model_type": "gpt2"}, tensors)
    with pytest.raises(ValueError, match=r"config\.json: unsupported architecture.*gpt2"):
        models.load_hf(path)


def test_missing_tensor_is_named(llama_tensors, tmp_path):
    config, tensors = llama_tensors
    name = "model.layers.1.mlp.up_proj.weight"
    path = _write(tmp_path / "ckpt", config, {k: v for k, v in tensors.items() if k != name})
    with pytest.raises(KeyError, match=re.escape(name)):
        models.load_hf(path)


def test_unexpected_tensor_is_named(llama_tensors, tmp_path):
    config, tensors = llama_tensors
    extra = {"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)}
    path = _write(tmp_path / "ckpt", config, {**tensors, **extra})
    with pytest.raises(ValueError, match=r"unexpected tensors.*q_norm"):
        models.load_hf(path)


def test_shape_mismatch_is_named(llama_tensors, tmp_path):
    config, tensors = llama_tensors
    path = _write(tmp_path / "ckpt", {**config, "intermediate_size": 48}, tensors)
    with pytest.raises(
        ValueError, match=r"down_proj\.weight.*shape \(32, 64\), expected \(32, 48\)"
    ):
        models.load_hf(path)


def test_sharded_checkpoint_with_index_loads(llama_tensors, tmp_path):
    config, tensors = llama_tensors
    directory = tmp_path / "sharded"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, params = models.load_hf(directory, scan_layers=True)
    np.testing.assert_array_equal(
        params["layers"]["mlp"]["up_proj"]["kernel"][1],
        tensors["model.layers.1.mlp.up_proj.weight"].T,
    )


def test_bfloat16_compute_and_logits_dtype(tmp_path):
    name = "qwen2"
    save_checkpoint(name, tmp_path)
    module, params = models.load_hf(tmp_path)
    low = models.build(
        dataclasses.replace(module.config, dtype=jnp.bfloat16, logits_dtype=jnp.bfloat16)
    )
    inputs = batch(name)
    real = real_positions(name, inputs)
    full = _kid_logits(module, params, inputs)[real]
    half = jitted_apply(low)({"params": params}, **inputs)  # fp32 params, bf16 compute.
    assert half.dtype == jnp.bfloat16
    error = np.abs(np.asarray(half, np.float32)[real] - full)
    assert error.mean() < 0.05 * full.std()


def test_list_eos_token_id_loads_generates_and_round_trips(llama_tensors, tmp_path):
    """Llama 3 style ``"eos_token_id": [a, b]``: a hashable tuple in kid's config, generate
    ends a row on either id, and save_hf writes the list back."""
    config, tensors = llama_tensors
    module, params = models.load_hf(_write(tmp_path / "plain", config, tensors))
    ids, mask = batch("llama_untied").values()
    free = decoding.generate(module, params, ids, mask, max_new_tokens=6, eos_id=-1).tokens
    stops = [int(free[0, 2]), int(free[1, 3])]
    path = _write(tmp_path / "ckpt", {**config, "eos_token_id": stops}, tensors)
    module, params = models.load_hf(path)
    assert module.config.eos_token_id == tuple(stops)
    out = jax.jit(
        lambda params: decoding.generate(module, params, ids, mask, max_new_tokens=6, pad_id=0)
    )(params)
    for row, tokens in zip(np.asarray(free), np.asarray(out.tokens), strict=True):
        stop = np.isin(row, stops)
        end = np.argmax(stop) + 1 if stop.any() else len(row)
        np.testing.assert_array_equal(tokens, np.where(np.arange(len(row)) < end, row, 0))
    saved = models.save_hf(module, params, tmp_path / "export")
    assert json.loads((saved / "config.json").read_text())["eos_token_id"] == stops
    assert transformers.AutoConfig.from_pretrained(saved).eos_token_id == stops
    assert models.load_hf(saved)[0].config == module.config
