"""A few train steps of a tiny KD run on a given mesh: the losses the mesh, multi-process
and resume tests compare. Importable by subprocesses (tests/ is on their path)."""

from __future__ import annotations

import jax
from kd_fixtures import EOS, PAD, make_batch, random_rows, tiny_module, tiny_variables

from kid import methods, models, sharding, train

GLOBAL_BATCH = 8


def losses(
    family: str, method: str, mesh_shape: dict, *, steps: int = 3, devices=None
) -> list[float]:
    """Losses of ``steps`` train steps (AdamW, accumulation 2) on ``mesh_shape``; with several
    processes each feeds its own rows of the same global batches."""
    mesh = sharding.make_mesh(mesh_shape, devices)
    student, teacher = tiny_module(family), tiny_module(family)
    cfg = methods.KDConfig(
        method=method,
        student=student,
        teacher=teacher,
        vocab_size=128,
        pad_id=PAD,
        eos_id=EOS,
        mask_id=3,
    )
    c = train.default_config()
    c.steps, c.warmup_steps, c.learning_rate, c.micro_batches = 10, 1, 1e-2, 2
    tx = train.optimizer(c)
    params = jax.device_put(tiny_variables(student)["params"], models.shardings(student, mesh))
    teacher_params = jax.device_put(
        tiny_variables(teacher, seed=1)["params"], models.shardings(teacher, mesh)
    )
    state_sharding = train.state_shardings(models.shardings(student, mesh), tx, params, mesh)
    state = jax.jit(
        lambda p: train.init_state(p, tx, jax.random.key(0)), out_shardings=state_sharding
    )(params)
    frozen = {"student": {}, "teacher": {"params": teacher_params}}
    frozen_sharding = {"student": {}, "teacher": {"params": models.shardings(teacher, mesh)}}
    step = train.TrainStep(
        methods.loss_fn(cfg), tx, mesh, state_sharding, frozen_sharding, micro_batches=2
    )
    out = []
    rows = slice(
        jax.process_index() * GLOBAL_BATCH // jax.process_count(),
        (jax.process_index() + 1) * GLOBAL_BATCH // jax.process_count(),
    )
    for i in range(steps):
        local = make_batch(family, *random_rows(10 + i, batch=GLOBAL_BATCH))
        local = {k: v[rows] for k, v in local.items()}
        state, metrics = step(state, frozen, train.global_batch(local, mesh))
        out.append(float(metrics["loss"]))
    assert step.compiles == 1
    return out
