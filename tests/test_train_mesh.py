"""The train step gives the same losses on 1 device, on a (data=2, fsdp=2, tensor=2) mesh of
8 simulated devices, and in two jax.distributed processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import eight_devices
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family,method", [("t5", "kid"), ("decoder", "fkd")])
def test_one_device_and_eight_devices_give_the_same_losses(family, method):
    eight_devices.run(
        f"""
import jax, numpy as np, train_steps
one = train_steps.losses({family!r}, {method!r}, {{"data": 1}}, devices=jax.devices()[:1])
eight = train_steps.losses({family!r}, {method!r}, {{"data": 2, "fsdp": 2, "tensor": 2}})
print(one, eight)
np.testing.assert_allclose(eight, one, rtol=2e-5)
print("OK")
"""
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PROCESS = """
import json, sys, jax
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
import train_steps
print(json.dumps(train_steps.losses("t5", "fkd", {"data": -1})))
"""


def test_two_processes_give_the_same_losses_as_one():
    env = eight_devices.env()
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(
        "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=1"
    )
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, address, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    per_process = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    single = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, train_steps; "
            "print(json.dumps(train_steps.losses('t5', 'fkd', {'data': -1})))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    expected = json.loads(single.stdout.strip().splitlines()[-1])
    assert per_process[0] == pytest.approx(expected, rel=2e-5)
    assert per_process[1] == pytest.approx(expected, rel=2e-5)
    assert os.environ.get("JAX_COORDINATOR_ADDRESS") is None
