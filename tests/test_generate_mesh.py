"""generate() inside an outer jax.jit on an 8-device (simulated CPU) mesh: same tokens as a
plain single-device call. The check runs in a subprocess because jax reads the device count
flag once, at import."""

from __future__ import annotations

import eight_devices


def check() -> None:
    import functools

    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from model_helpers import random_params

    from kid import decoding, models, sharding

    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    ids = np.random.default_rng(0).integers(3, 128, size=(8, 6))
    mask = (np.arange(6) >= np.array([[0], [2], [5], [1], [0], [3], [4], [0]])).astype(np.int32)
    ids = ids * mask
    cases = [
        ("qwen2-tiny", dict(method="sample", top_k=5, rng=jax.random.key(3))),
        ("qwen2-tiny", dict(method="beam", num_beams=3)),
        ("t5-tiny", dict(method="greedy")),
    ]
    for name, kwargs in cases:
        module = models.build(models.get_config(name))
        params = random_params(module)
        if name.startswith("t5"):  # encoder inputs are right-padded
            ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()
        run = functools.partial(decoding.generate, module, max_new_tokens=10, eos_id=5, **kwargs)
        outside = jax.jit(run)(params, ids, mask)  # one device, no mesh
        params_on_mesh = jax.device_put(params, models.shardings(module, mesh))
        batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        with sharding.use_mesh(mesh):
            inside = jax.jit(run)(
                params_on_mesh, jax.device_put(ids, batch), jax.device_put(mask, batch)
            )
        assert len(inside.tokens.sharding.device_set) == 8
        np.testing.assert_array_equal(inside.tokens, outside.tokens, err_msg=f"{name} {kwargs}")
        np.testing.assert_allclose(inside.logprobs, outside.logprobs, atol=1e-4)
    print("OK")


def test_generate_under_8_device_mesh_matches_single_device():
    eight_devices.run("import test_generate_mesh; test_generate_mesh.check()")
