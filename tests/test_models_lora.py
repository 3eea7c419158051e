"""LoRA adapters: zero B is the base model, merging is exact, only adapters train, export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from hf_fixtures import batch, save_checkpoint, torch_logits
from model_helpers import jitted_apply, random_params

from kid import models

ALL_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "q",
    "k",
    "v",
    "o",
    "wi",
    "wi_0",
    "wi_1",
    "wo",
)
IDS = np.array([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8]])
MASK = (IDS > 0).astype(np.int32)
DECODER_IDS = np.array([[0, 9, 10], [0, 11, 12]])


def _inputs(module):
    if models.is_encoder_decoder(module):
        return (IDS, MASK, DECODER_IDS)
    return (IDS, MASK)


def _random_adapters(lora_module, seed: int = 2, scale: float = 0.3, zero_b: bool = False):
    shapes, _ = models.param_axes(lora_module, "lora")
    rng = np.random.default_rng(seed)

    def draw(path, x):
        if zero_b and path[-1].key == "b":
            return np.zeros(x.shape, np.float32)
        return scale * rng.standard_normal(x.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _with_adapters(name: str, *, scan: bool = False, zero_b: bool = False):
    """(base module, lora module, params, random adapters) for a tiny preset."""
    base = models.build(models.get_config(name, scan_layers=scan))
    lora_module = models.with_lora(base, models.LoRAConfig(rank=4, alpha=8.0, targets=ALL_TARGETS))
    return base, lora_module, random_params(base), _random_adapters(lora_module, zero_b=zero_b)


def _adapter_leaves(lora, which: str) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(lora)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat if p[-1].key == which}


@pytest.mark.parametrize("name", ["qwen2-tiny", "t5v1_1-tiny"])
def test_adapters_on_every_target(name):
    _, lora_module, _, lora = _with_adapters(name)
    cfg = lora_module.config
    if name == "qwen2-tiny":  # 4 attention + 3 MLP projections per layer.
        expected = cfg.num_hidden_layers * 7
    else:  # Encoder: 4 + 3 (gated MLP); decoder: 4 + 4 (cross) + 3.
        expected = cfg.num_layers * 7 + cfg.num_decoder_layers * 11
    assert len(_adapter_leaves(lora, "a")) == len(_adapter_leaves(lora, "b")) == expected


def test_init_gives_zero_b_and_base_logits():
    base, lora_module, params, _ = _with_adapters("qwen2-tiny")
    lora = models.init(lora_module, jax.random.key(1), collection="lora")
    assert all(not np.any(b) for b in _adapter_leaves(lora, "b").values())
    assert all(np.any(a) for a in _adapter_leaves(lora, "a").values())
    expected = jitted_apply(base)({"params": params}, *_inputs(base))
    actual = jitted_apply(lora_module)({"params": params, "lora": lora}, *_inputs(base))
    np.testing.assert_array_equal(actual, expected)


def test_zero_b_gives_base_logits_t5():
    base, lora_module, params, lora = _with_adapters("t5v1_1-tiny", zero_b=True)
    expected = jitted_apply(base)({"params": params}, *_inputs(base))
    actual = jitted_apply(lora_module)({"params": params, "lora": lora}, *_inputs(base))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("name", "scan"), [("llama-tiny", True), ("t5-tiny", False)])
def test_merged_equals_unmerged(name, scan):
    base, lora_module, params, lora = _with_adapters(name, scan=scan)
    unmerged = jitted_apply(lora_module)({"params": params, "lora": lora}, *_inputs(base))
    merged_params = models.merge_lora(params, lora, lora_module.config.lora.scale)
    merged = jitted_apply(base)({"params": merged_params}, *_inputs(base))
    base_logits = jitted_apply(base)({"params": params}, *_inputs(base))
    assert np.abs(np.asarray(unmerged) - np.asarray(base_logits)).max() > 0.1  # Adapters matter.
    np.testing.assert_allclose(merged, unmerged, atol=1e-4)


def test_training_updates_only_adapters():
    base, lora_module, params, lora = _with_adapters("llama-tiny", zero_b=True)
    lora_module = models.build(
        models.get_config("llama-tiny", remat=True, lora=lora_module.config.lora)
    )
    targets = np.roll(IDS, -1, axis=1)

    def loss_fn(lora, params):
        logits = lora_module.apply({"params": params, "lora": lora}, IDS, MASK)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(ce * MASK) / MASK.sum()

    grad_fn = jax.jit(jax.value_and_grad(loss_fn))
    loss0, grads = grad_fn(lora, params)
    # With B = 0 only B has a gradient, in every adapted layer (the first included, so the
    # gradient flows back through the frozen base).
    assert all(np.abs(g).max() > 0 for g in _adapter_leaves(grads, "b").values())
    assert all(not np.any(g) for g in _adapter_leaves(grads, "a").values())
    optimizer = optax.adam(1e-2)
    state = optimizer.init(lora)
    params_before = jax.tree.map(np.array, params)
    for _ in range(5):
        loss, grads = grad_fn(lora, params)
        updates, state = optimizer.update(grads, state)
        lora = optax.apply_updates(lora, updates)
    assert float(loss) < float(loss0)
    assert all(np.abs(g).max() > 0 for g in _adapter_leaves(grad_fn(lora, params)[1], "a").values())
    jax.tree.map(np.testing.assert_array_equal, params, params_before)


def test_save_hf_merges_adapters(tmp_path):
    save_checkpoint("qwen2", tmp_path / "base")
    base, params = models.load_hf(tmp_path / "base")
    lora_module = models.with_lora(base, models.LoRAConfig(rank=2, targets=ALL_TARGETS))
    lora = _random_adapters(lora_module, scale=0.2)
    models.save_hf(lora_module, params, tmp_path / "merged", lora=lora)
    inputs = batch("qwen2")
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(jitted_apply(lora_module)({"params": params, "lora": lora}, **inputs))
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    real = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        torch_logits(merged, "qwen2", inputs)[real], expected[real], atol=1e-4, rtol=0
    )
