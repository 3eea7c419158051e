"""kid.models.init eagerly and inside an outer jax.jit / jax.eval_shape, with and without a
mesh: the same values for the same key, and the parameters' shardings.

The mesh part runs `check` on an 8-device mesh in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (jax reads the flag at first import).
"""

from __future__ import annotations

import functools

import eight_devices
import jax
import numpy as np

from kid import models

CASES = ("t5-tiny", "qwen2-tiny")


def check(mesh) -> None:
    """Eager init, init under jit and under eval_shape agree for both families on `mesh`."""
    key = jax.random.key(3)
    for name in CASES:
        module = models.build(models.get_config(name))

        def init(key, module=module):
            return models.init(module, key, mesh=mesh)

        eager, jitted, shapes = init(key), jax.jit(init)(key), jax.eval_shape(init, key)
        # Same random draws; the eager init compiles unoptimised, so equal up to rounding.
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), jitted, eager)
        expected, _ = models.param_axes(module)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == jax.tree.map(
            lambda x: (x.shape, x.dtype), expected
        )
        if mesh is not None:
            targets = models.shardings(module, mesh)
            for out in (eager, jitted):
                assert jax.tree.all(
                    jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), out, targets)
                ), name
    print("OK")


def test_init_under_jit_and_eval_shape():
    check(None)


def test_init_under_jit_on_an_8_device_mesh():
    code = (
        "import jax, test_models_init as t; from kid import sharding; "
        "assert jax.device_count() == 8; "
        "t.check(sharding.make_mesh({'fsdp': 2, 'tensor': 4}))"
    )
    eight_devices.run(code)
