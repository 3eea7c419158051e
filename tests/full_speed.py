"""Runs a training job in a fresh interpreter with XLA's full CPU optimisation.

conftest.py turns LLVM's optimisation off for the suite's many tiny compiles; a job that
trains and decodes for tens of steps runs faster with it on (the runlocal demo job: 97 s
against 132 s on this 2-core machine), and jax reads the flag only when its backend starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]
UNOPTIMISED = "--xla_backend_optimization_level=0"

_RUN_MAIN = """
import json, sys
import ml_collections
from kid import main
main.run(ml_collections.ConfigDict(json.loads(sys.argv[1])), sys.argv[2])
"""


def env() -> dict[str, str]:
    """This process's environment without conftest's flag, with kid on the path."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != UNOPTIMISED)
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": path}


def run_main(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> None:
    """kid.main.run(config, workdir) in a subprocess; its stderr's tail on failure."""
    argv = [sys.executable, "-c", _RUN_MAIN, json.dumps(config.to_dict()), str(workdir)]
    result = subprocess.run(argv, env=env(), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
