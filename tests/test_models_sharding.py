"""Logical axis rules, meshes, and the same logits on 1 device and on an 8-device mesh.

The 8-device part runs this file as a script in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (jax reads the flag at first import).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import eight_devices
import jax
import numpy as np
from hf_fixtures import batch, save_checkpoint
from jax.sharding import AxisType, PartitionSpec
from model_helpers import jitted_apply

from kid import models, sharding

REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = ("qwen2", "t5_v1_1")
RULES = (("embed", "fsdp"), ("heads", "tensor"), ("batch", ("data", "fsdp")))


def test_logical_to_spec_replicates_non_dividing_axes():
    mesh_shape = {"data": 2, "fsdp": 2, "tensor": 4}
    rules = RULES
    assert sharding.logical_to_spec(
        ("embed", "heads"), (32, 8), mesh_shape, rules
    ) == PartitionSpec("fsdp", "tensor")
    # 6 heads do not divide a 4-way tensor axis: replicated, no error.
    assert sharding.logical_to_spec(
        ("embed", "heads"), (32, 6), mesh_shape, rules
    ) == PartitionSpec("fsdp", None)
    # A multi-axis rule keeps the mesh axes that divide: batch 6 -> data only.
    assert sharding.logical_to_spec(("batch",), (8,), mesh_shape, rules) == PartitionSpec(
        ("data", "fsdp")
    )
    assert sharding.logical_to_spec(("batch",), (6,), mesh_shape, rules) == PartitionSpec("data")
    # Mesh axes absent from the mesh, unknown names and None are replicated.
    assert sharding.logical_to_spec(
        ("embed", None, "nope"), (32, 3, 4), {"tensor": 4}, rules
    ) == PartitionSpec(None, None, None)


def test_logical_to_spec_uses_a_mesh_axis_once():
    rules = (("a", "tensor"), ("b", "tensor"), ("b", "data"))
    spec = sharding.logical_to_spec(("a", "b"), (4, 4), {"tensor": 4, "data": 2}, rules)
    assert spec == PartitionSpec("tensor", "data")


def test_make_mesh_fills_one_axis_with_auto_types():
    mesh = sharding.make_mesh({"data": -1, "tensor": 1})
    assert dict(mesh.shape) == {"data": jax.device_count(), "tensor": 1}
    assert set(mesh.axis_types) == {AxisType.Auto}


def _on_eight_devices(directories: dict[str, pathlib.Path], out: pathlib.Path) -> None:
    """Child process: load each checkpoint onto a data x tensor mesh and record logits."""
    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.make_mesh({"data": 2, "tensor": 4})
    results, specs = {}, {}
    for name, directory in directories.items():
        module, params = models.load_hf(directory, mesh=mesh)
        specs[name] = {
            "/".join(k.key for k in path): str(x.sharding.spec)
            for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        with sharding.use_mesh(mesh):
            full, first, step = _forward_prefill_step(module, params, _four_rows(name))
        results.update({name: full, f"{name}_prefill": first, f"{name}_step": step})
    np.savez(out, **results)
    out.with_suffix(".json").write_text(json.dumps(specs))


def _forward_prefill_step(module, params, inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of a full forward pass, of prefill, and of one cached greedy decode step."""
    apply, variables = jitted_apply(module), {"params": params}
    with jax.default_matmul_precision("highest"):
        full = apply(variables, **inputs)
        first, cache = apply(
            variables,
            inputs["input_ids"],
            inputs["attention_mask"],
            max_new_tokens=2,
            method="prefill",
        )
        step, _ = apply(variables, first.argmax(-1)[:, None], cache, method="decode")
    return np.asarray(full), np.asarray(first), np.asarray(step)


def _four_rows(name: str) -> dict[str, np.ndarray]:
    """The padded test batch plus one row: 4 rows divide the 2-way data axis."""
    return {k: np.concatenate([v, v[:1]]) for k, v in batch(name).items()}


def test_same_logits_on_one_and_eight_devices(tmp_path):
    directories = {name: tmp_path / name for name in CASES}
    for name, directory in directories.items():
        save_checkpoint(name, directory)
    out = tmp_path / "eight.npz"
    env = eight_devices.env()
    args = [
        sys.executable,
        __file__,
        str(out),
        json.dumps({k: str(v) for k, v in directories.items()}),
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = np.load(out)
    specs = json.loads(out.with_suffix(".json").read_text())
    # Heads shard on the tensor axis; Qwen2's 2 kv heads do not divide it and are replicated.
    layer = "layers_0/self_attn"
    assert specs["qwen2"][f"{layer}/q_proj/kernel"] == str(PartitionSpec(None, "tensor", None))
    assert specs["qwen2"][f"{layer}/k_proj/kernel"] == str(PartitionSpec(None, None, None))
    assert specs["qwen2"]["embed_tokens/embedding"] == str(PartitionSpec("tensor", None))
    assert specs["t5_v1_1"]["decoder/layers_0/mlp/wi_0/kernel"] == str(
        PartitionSpec(None, "tensor")
    )

    for name, directory in directories.items():
        module, params = models.load_hf(directory)
        one, first, step = _forward_prefill_step(module, params, _four_rows(name))
        np.testing.assert_allclose(eight[name], one, atol=1e-4, rtol=0)
        np.testing.assert_allclose(eight[f"{name}_prefill"], first, atol=1e-4, rtol=0)
        np.testing.assert_allclose(eight[f"{name}_step"], step, atol=1e-4, rtol=0)


if __name__ == "__main__":
    _on_eight_devices(
        {k: pathlib.Path(v) for k, v in json.loads(sys.argv[2]).items()}, pathlib.Path(sys.argv[1])
    )
