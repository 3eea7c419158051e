"""rkd, kid, kid_cascade and gkd on an 8-device (simulated CPU) mesh give the loss and
gradient of one device. In a subprocess: jax reads the device count flag once, at import."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def check() -> None:
    import jax
    import numpy as np
    import optax
    from jax.sharding import NamedSharding, PartitionSpec
    from kd_fixtures import make_batch, random_rows
    from test_methods import make_pair

    from kid import methods, models, sharding

    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    for family in ("t5", "decoder"):
        pair = make_pair(family)
        batch = make_batch(family, *random_rows(11, batch=8, max_target=6), target_len=8)
        rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        on_mesh = {
            "student": jax.device_put(
                pair.student_vars["params"], models.shardings(pair.student, mesh)
            ),
            "teacher": {
                "params": jax.device_put(
                    pair.teacher_vars["params"], models.shardings(pair.teacher, mesh)
                )
            },
            "batch": {k: jax.device_put(v, rows) for k, v in batch.items()},
        }
        for method in ("rkd", "kid", "kid_cascade", "gkd"):
            fn = methods.loss_fn(pair.cfg(method, on_policy_fraction=0.5))
            grad = jax.jit(jax.value_and_grad(fn, has_aux=True))
            key = jax.random.key(4)
            (one, _), one_grads = grad(pair.student_vars["params"], pair.frozen(), batch, key)
            with sharding.use_mesh(mesh):
                frozen = {"student": {}, "teacher": on_mesh["teacher"]}
                (eight, _), eight_grads = grad(on_mesh["student"], frozen, on_mesh["batch"], key)
            np.testing.assert_allclose(eight, one, rtol=1e-5, err_msg=f"{family} {method}")
            np.testing.assert_allclose(
                optax.tree.norm(eight_grads), optax.tree.norm(one_grads), rtol=1e-4
            )
            leaf = jax.tree.leaves(eight_grads)[0]
            assert len(leaf.sharding.device_set) == 8, (family, method)
    print("OK")


def test_methods_on_8_device_mesh_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    code = "import test_methods_mesh; test_methods_mesh.check()"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-5000:]
