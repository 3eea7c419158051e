"""The train step: exact gradient accumulation, optimizer, non-finite guard, LoRA."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_fixtures import EOS, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid import methods, models, sharding, train


def _config(**overrides):
    c = train.default_config()
    c.steps, c.warmup_steps, c.learning_rate = 10, 2, 1e-2
    c.update(overrides)
    return c


def _kd_setup(family: str, method: str):
    student = tiny_module(family)
    teacher = tiny_module(family)
    cfg = methods.KDConfig(
        method=method,
        student=student,
        teacher=None if method == "sft" else teacher,
        vocab_size=128,
        pad_id=PAD,
        eos_id=EOS,
        mask_id=3,
    )
    frozen = {"student": {}, "teacher": tiny_variables(teacher, seed=1)}
    return cfg, tiny_variables(student)["params"], frozen


def _uneven_batch(family: str):
    # Rows with very different target lengths: a mean of micro-batch means is not the mean.
    prompts, targets = random_rows(4, batch=4, max_target=7)
    targets[0], targets[2] = targets[0][:1], targets[2][:1]  # micro-batch 0 of 2: 2 tokens
    targets[1] = np.append(np.arange(3, 9), EOS)
    return {k: jnp.asarray(v) for k, v in make_batch(family, prompts, targets).items()}


@pytest.mark.parametrize("family", ["t5", "decoder"])
@pytest.mark.parametrize("method", ["sft", "fkd"])
def test_accumulation_equals_the_whole_batch(family, method):
    cfg, params, frozen = _kd_setup(family, method)
    batch = _uneven_batch(family)
    loss_fn = methods.loss_fn(cfg)
    tx = train.optimizer(_config())
    state = train.init_state(params, tx, jax.random.key(0))
    results = {}
    for k in (1, 2, 4):
        step = jax.jit(functools.partial(train.train_step, loss_fn=loss_fn, tx=tx, micro_batches=k))
        new, metrics = step(state, frozen, batch)
        results[k] = (new, metrics)
    whole, whole_metrics = results[1]
    for k in (2, 4):
        new, metrics = results[k]
        np.testing.assert_allclose(metrics["loss"], whole_metrics["loss"], rtol=1e-5)
        np.testing.assert_allclose(metrics["grad_norm"], whole_metrics["grad_norm"], rtol=1e-4)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
            new.params,
            whole.params,
        )


def test_mean_of_micro_batch_means_differs():
    # The reason for normalising once: on this batch optax.MultiSteps' averaging is not it.
    cfg, params, frozen = _kd_setup("t5", "sft")
    batch = _uneven_batch("t5")
    loss_fn = methods.loss_fn(cfg)
    halves = [jax.tree.map(lambda x, i=i: x[i::2], batch) for i in range(2)]
    means = [float(loss_fn(params, frozen, h, jax.random.key(0))[0]) for h in halves]
    whole = float(loss_fn(params, frozen, batch, jax.random.key(0))[0])
    assert abs(np.mean(means) - whole) > 1e-3


def test_schedule_warmup_then_cosine():
    schedule = train.learning_rate_schedule(_config(steps=10, warmup_steps=2, learning_rate=1.0))
    lrs = [float(schedule(i)) for i in range(11)]
    np.testing.assert_allclose(lrs[:3], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(lrs[6], 0.5 * (1 + np.cos(np.pi * 4 / 8)), atol=1e-6)
    assert lrs[10] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="train.schedule"):
        train.learning_rate_schedule(_config(schedule="exp"))


def test_non_finite_loss_leaves_the_state_unchanged():
    cfg, params, frozen = _kd_setup("t5", "sft")
    batch = _uneven_batch("t5")
    params = jax.tree.map(lambda p: jnp.asarray(p).at[(0,) * p.ndim].set(jnp.nan), params)
    tx = train.optimizer(_config())
    state = train.init_state(params, tx, jax.random.key(0))
    step = jax.jit(functools.partial(train.train_step, loss_fn=methods.loss_fn(cfg), tx=tx))
    new, metrics = step(state, frozen, batch)
    assert float(metrics["finite"]) == 0.0
    assert int(new.step) == 0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new.params, state.params)


def test_lora_updates_only_the_adapters():
    base = tiny_module("decoder")
    module = models.with_lora(base, models.LoRAConfig(rank=4, alpha=8.0))
    params = tiny_variables(base)["params"]
    lora = models.init(module, jax.random.key(1), collection="lora")
    lora = jax.tree.map(lambda x: x + 0.01, lora)  # B != 0 so gradients reach A as well
    cfg = methods.KDConfig(
        method="sft", student=module, trainable="lora", vocab_size=128, pad_id=PAD, eos_id=EOS
    )
    frozen = {"student": {"params": params}}
    before = jax.tree.map(np.asarray, params)
    lora_before = jax.tree.map(np.asarray, lora)  # the state is donated to the step
    tx = train.optimizer(_config())
    state = train.init_state(lora, tx, jax.random.key(0))
    mesh = sharding.make_mesh({"data": -1})
    shardings = train.state_shardings(
        models.shardings(module, mesh, collection="lora"), tx, lora, mesh
    )
    frozen_shardings = {"student": {"params": models.shardings(module, mesh)}}
    step = train.TrainStep(methods.loss_fn(cfg), tx, mesh, shardings, frozen_shardings)
    batch = train.global_batch(
        make_batch("decoder", *random_rows(2, batch=len(jax.devices()) * 2)), mesh
    )
    for _ in range(2):
        state, metrics = step(state, frozen, batch)
    assert step.compiles == 1 and int(state.step) == 2
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b), frozen["student"]["params"], before
    )
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params, lora_before)
    assert all(jax.tree.leaves(changed))
