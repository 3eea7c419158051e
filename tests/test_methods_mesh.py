"""rkd, kid, kid_cascade and gkd on an 8-device (simulated CPU) mesh give the loss (and for
rkd and kid the gradient) of one device, in a subprocess (``eight_devices``)."""

from __future__ import annotations

import eight_devices


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
        # Gradients too where the step differentiates through the rewrite's batch builders;
        # the loss alone for the decoding methods (their backward is rkd's).
        for method, with_grad in (
            ("rkd", True),
            ("kid", True),
            ("kid_cascade", False),
            ("gkd", False),
        ):
            fn = methods.loss_fn(pair.cfg(method, on_policy_fraction=0.5))
            run = jax.jit(jax.value_and_grad(fn, has_aux=True) if with_grad else fn)
            key = jax.random.key(4)
            one = run(pair.student_vars["params"], pair.frozen(), batch, key)
            with sharding.use_mesh(mesh):
                frozen = {"student": {}, "teacher": on_mesh["teacher"]}
                eight = run(on_mesh["student"], frozen, on_mesh["batch"], key)
            (one_loss, _), (eight_loss, _) = (one[0], eight[0]) if with_grad else (one, eight)
            np.testing.assert_allclose(
                eight_loss, one_loss, rtol=1e-5, err_msg=f"{family} {method}"
            )
            if with_grad:
                np.testing.assert_allclose(
                    optax.tree.norm(eight[1]), optax.tree.norm(one[1]), rtol=1e-4
                )
                assert len(jax.tree.leaves(eight[1])[0].sharding.device_set) == 8, (family, method)
    print("OK")


def test_methods_on_8_device_mesh_match_single_device():
    eight_devices.run("import test_methods_mesh; test_methods_mesh.check()")
