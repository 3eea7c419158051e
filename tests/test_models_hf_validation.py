"""load_hf on hostile or malformed checkpoints: every bad config.json field, index entry,
safetensors header and non-float tensor is a CheckpointError (a ValueError) naming the file
and the field or tensor; what transformers 5 writes still loads."""

from __future__ import annotations

import json
import os
import pathlib
import struct

import ml_dtypes
import numpy as np
import pytest
import transformers
from hf_fixtures import CASES, save_checkpoint
from safetensors.numpy import load_file, save_file

from kid import models
from kid.models.hf import CheckpointError

SHARD = "model-00001-of-00001.safetensors"


def _source(tmp_path_factory, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    directory = tmp_path_factory.mktemp(name)
    save_checkpoint(name, directory)
    config = json.loads((directory / "config.json").read_text())
    return config, load_file(directory / "model.safetensors")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(config.json dict, tensors) of a tiny untied Llama, to corrupt."""
    return _source(tmp_path_factory, "llama_untied")


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return _source(tmp_path_factory, "t5_v1_0")


def _write(directory: pathlib.Path, config, tensors, file: str = "model.safetensors"):
    """A checkpoint directory; ``config`` is a dict or raw config.json text."""
    directory.mkdir(parents=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (directory / "config.json").write_text(text)
    save_file(tensors, directory / file, metadata={"format": "pt"})
    return directory


def _refused(path: pathlib.Path, *needles: str) -> CheckpointError:
    """load_hf's CheckpointError, whose message holds every needle."""
    with pytest.raises(CheckpointError) as info:
        models.load_hf(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


BAD_DECODER_FIELDS = [
    ("hidden_size", "32"),
    ("hidden_size", 32.0),
    ("num_attention_heads", 0),
    ("num_key_value_heads", 3),  # Does not divide 4 heads.
    ("vocab_size", 0),
    ("vocab_size", None),  # Required.
    ("intermediate_size", -64),
    ("num_hidden_layers", -1),  # Not "unexpected tensors".
    ("num_hidden_layers", True),
    ("head_dim", 0),
    ("rms_norm_eps", "1e-5"),
    ("attention_dropout", float("nan")),
    ("tie_word_embeddings", "false"),
    ("hidden_act", "swish"),
    ("eos_token_id", "2"),
    ("eos_token_id", [1, "2"]),
    ("rope_parameters", [10000.0]),
]


@pytest.mark.parametrize(("field", "value"), BAD_DECODER_FIELDS)
def test_bad_decoder_field_is_named(llama, tmp_path, field, value):
    config, tensors = llama
    path = _write(tmp_path / "ckpt", {**config, field: value}, tensors)
    _refused(path, str(path / "config.json"), field)


def test_bad_nested_rope_theta_is_named(llama, tmp_path):
    config, tensors = llama
    rope = {"rope_type": "default", "rope_theta": -1}
    path = _write(tmp_path / "ckpt", {**config, "rope_parameters": rope}, tensors)
    _refused(path, str(path / "config.json"), "rope_parameters.rope_theta")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("d_kv", "8"),
        ("num_heads", 0),
        ("num_decoder_layers", -2),
        ("layer_norm_epsilon", 0),
        ("feed_forward_proj", "gated-swish"),
        ("feed_forward_proj", "double-relu"),
        ("pad_token_id", 0.5),
    ],
)
def test_bad_t5_field_is_named(t5, tmp_path, field, value):
    config, tensors = t5
    path = _write(tmp_path / "ckpt", {**config, field: value}, tensors)
    _refused(path, str(path / "config.json"), field)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("[1, 2]", "must be a JSON object"), ('{"model_type": "llama",', "invalid JSON")],
)
def test_config_json_not_an_object_is_named(llama, tmp_path, text, needle):
    path = _write(tmp_path / "ckpt", text, llama[1])
    _refused(path, str(path / "config.json"), needle)


def test_null_optional_fields_read_as_absent(llama, tmp_path):
    config, tensors = llama
    nulls = dict.fromkeys(["head_dim", "rope_parameters", "pad_token_id", "mlp_bias"])
    nulls["rms_norm_eps"] = None
    path = _write(tmp_path / "ckpt", {**config, **nulls}, tensors)
    loaded = models.load_hf(path)[0].config
    assert (loaded.head_dim, loaded.rope_theta, loaded.pad_token_id) == (8, 10000.0, None)


# ----------------------------------------------------------------------------- index files


def _sharded(directory: pathlib.Path, config: dict, tensors, weight_map) -> pathlib.Path:
    _write(directory, config, tensors, file=SHARD)
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


@pytest.mark.parametrize("weight_map", [None, [SHARD], "model.safetensors"])
def test_index_without_weight_map_object_is_named(llama, tmp_path, weight_map):
    config, tensors = llama
    path = _sharded(tmp_path / "ckpt", config, tensors, weight_map)
    _refused(path, str(path / "model.safetensors.index.json"), "weight_map")


def test_index_entry_not_a_file_name_is_named(llama, tmp_path):
    config, tensors = llama
    weight_map = {**dict.fromkeys(tensors, SHARD), "model.norm.weight": 3}
    path = _sharded(tmp_path / "ckpt", config, tensors, weight_map)
    _refused(path, "model.safetensors.index.json", "weight_map['model.norm.weight']")


def test_index_entry_missing_from_its_file_is_named(llama, tmp_path):
    config, tensors = llama
    name = "model.norm.weight"
    kept = {k: v for k, v in tensors.items() if k != name}
    path = _sharded(tmp_path / "ckpt", config, kept, dict.fromkeys(tensors, SHARD))
    _refused(path, repr(name), str(path / SHARD), "does not hold it")


@pytest.mark.parametrize("escape", ["parent", "absolute", "symlink"])
def test_index_entry_outside_directory_is_refused(llama, tmp_path, escape):
    """The entry names a real safetensors file outside the checkpoint, which is not read."""
    config, tensors = llama
    outside = tmp_path / "outside" / SHARD
    outside.parent.mkdir()
    save_file(tensors, outside)
    directory = tmp_path / "ckpt"
    file = {"parent": f"../outside/{SHARD}", "absolute": str(outside), "symlink": "link"}[escape]
    path = _sharded(directory, config, tensors, {**dict.fromkeys(tensors, SHARD), "x": file})
    if escape == "symlink":
        (directory / "link").symlink_to(outside)
    needle = "resolves to" if escape == "symlink" else "not a relative path inside"
    _refused(path, "model.safetensors.index.json", "weight_map['x']", needle)


def test_hub_cache_snapshot_with_linked_blobs_loads(llama, tmp_path):
    """Hugging Face's cache links snapshots/<rev>/<file> to ../../blobs/<hash>: allowed."""
    config, tensors = llama
    repo = tmp_path / "models--org--tiny"
    blob = repo / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    save_file(tensors, blob, metadata={"format": "pt"})
    snapshot = repo / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (snapshot / SHARD).symlink_to(os.path.relpath(blob, snapshot))
    (snapshot / "config.json").write_text(json.dumps(config))
    index = {"weight_map": dict.fromkeys(tensors, SHARD)}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    params = models.load_hf(snapshot)[1]
    np.testing.assert_array_equal(params["norm"]["scale"], tensors["model.norm.weight"])


# ----------------------------------------------------------------------------- safetensors


def _corrupt(raw: bytes, case: str) -> bytes:
    header = b'{"a": 1'  # Invalid JSON.
    return {
        "truncated": raw[:-4],
        "too_short": raw[:5],
        "header_length": struct.pack("<Q", 10**12) + raw[8:],
        "header_json": struct.pack("<Q", len(header)) + header,
    }[case]


@pytest.mark.parametrize("case", ["truncated", "too_short", "header_length", "header_json"])
def test_bad_safetensors_header_names_the_file(llama, tmp_path, case):
    config, tensors = llama
    path = _write(tmp_path / "ckpt", config, tensors)
    file = path / "model.safetensors"
    file.write_bytes(_corrupt(file.read_bytes(), case))
    _refused(path, str(file), "invalid safetensors file")


@pytest.mark.parametrize(
    ("name", "dtype", "code"),
    [("model.layers.0.mlp.up_proj.weight", np.int32, "I32"), ("model.norm.weight", bool, "BOOL")],
)
def test_non_float_tensor_is_refused(llama, tmp_path, name, dtype, code):
    config, tensors = llama
    path = _write(tmp_path / "ckpt", config, {**tensors, name: tensors[name].astype(dtype)})
    _refused(path, repr(name), code, str(path / "model.safetensors"))


def test_bfloat16_tensors_load(llama, tmp_path):
    config, tensors = llama
    low = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    params = models.load_hf(_write(tmp_path / "ckpt", config, low))[1]
    expected = low["model.norm.weight"].astype(np.float32)
    np.testing.assert_array_equal(params["norm"]["scale"], expected)


# ----------------------------------------------------------------------------- transformers 5


def test_transformers5_configs_load(tmp_path):
    """save_pretrained's own config.json (rope_parameters, dtype, null ids, layer_types, a
    list eos) loads, and so does the older spelling (rope_theta, torch_dtype)."""
    hf = CASES["llama_tied"]()  # rope_theta=500.
    hf.eos_token_id = [2, 5]
    transformers.AutoModelForCausalLM.from_config(hf).save_pretrained(tmp_path / "new")
    written = json.loads((tmp_path / "new" / "config.json").read_text())
    assert "rope_parameters" in written and "rope_theta" not in written and "dtype" in written
    config = models.load_hf(tmp_path / "new")[0].config
    assert (config.rope_theta, config.eos_token_id, config.num_key_value_heads) == (
        500.0,
        (2, 5),
        1,
    )
    old = {k: v for k, v in written.items() if k not in ("rope_parameters", "dtype")}
    old.update(rope_theta=500.0, rope_scaling=None, torch_dtype="float32")
    tensors = load_file(tmp_path / "new" / "model.safetensors")
    assert models.load_hf(_write(tmp_path / "old", old, tensors))[0].config == config
    qwen = CASES["qwen2"]()
    transformers.AutoModelForCausalLM.from_config(qwen).save_pretrained(tmp_path / "qwen")
    written = json.loads((tmp_path / "qwen" / "config.json").read_text())
    assert written["eos_token_id"] is None and "layer_types" in written
    assert models.load_hf(tmp_path / "qwen")[0].config.eos_token_id is None
