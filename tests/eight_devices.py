"""Runs a check in a fresh interpreter with 8 simulated CPU devices: jax reads the device
count flag once, when its backend starts, so a multi-device test cannot run in-process."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


# The 8 simulated devices are threads on (here) 2 cores: on a loaded machine one may reach a
# collective long after the others, which XLA's CPU runtime treats as a hang after 40 s.
FLAGS = (
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_collective_timeout_seconds=900",
    "--xla_cpu_collective_call_terminate_timeout_seconds=900",
)


def env() -> dict[str, str]:
    """This process's environment plus 8 CPU devices (other XLA flags kept) and kid + tests
    on the path."""
    flags = " ".join([os.environ.get("XLA_FLAGS", ""), *FLAGS])
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "XLA_FLAGS": flags.strip(), "PYTHONPATH": path}


def run(code: str, timeout: int = 900) -> None:
    """Runs ``code`` (python -c); it must print OK."""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-5000:]
