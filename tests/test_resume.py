"""The main job survives kill -9, SIGTERM and a corrupted checkpoint: the continued run's
losses equal an uninterrupted run's (CONTRACT 5's restored line included)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import full_speed
import pytest

from kid import metrics_log

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 24


def _command(workdir, bench) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kid.main",
        "--config",
        f"{REPO}/configs/demo.py:runlocal",
        "--workdir",
        str(workdir),
        "--config.stages=benchmark,teacher",
        f"--config.benchmark.dir={bench}",
        "--config.data.min_group_batches=1000",
        f"--config.teacher.train.steps={STEPS}",
        "--config.teacher.train.save_every=8",
        "--config.teacher.train.log_every=1",
        "--config.teacher.train.warmup_steps=2",
        "--config.teacher.preset=t5-synth-student",
    ]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The five runs compile the same programs: share them through jax's disk cache."""
    cache = tmp_path_factory.mktemp("jax_cache")
    saved = {k: os.environ.get(k) for k in _CACHE_ENV}
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


def _run_to_end(workdir, bench) -> None:
    subprocess.run(
        _command(workdir, bench),
        check=True,
        capture_output=True,
        cwd=REPO,
        env=full_speed.env(),
        timeout=900,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    bench, workdir = root / "bench", root / "uninterrupted"
    _run_to_end(workdir, bench)
    return bench, _losses(workdir)


def _records(workdir) -> list[dict]:
    path = os.path.join(workdir, "teacher", "metrics.jsonl")
    return metrics_log.read_metrics(path) if os.path.exists(path) else []


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(workdir) if "loss" in r}


def _start_and_wait(workdir, bench, step: int, committed: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        _command(workdir, bench),
        cwd=REPO,
        env=full_speed.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    latest = pathlib.Path(workdir, "teacher", "checkpoints", "latest")
    deadline = time.time() + 600
    while time.time() < deadline:
        done = any(r.get("step", 0) >= step for r in _records(workdir))
        if done and (committed is None or (latest / committed / "commit_success.txt").exists()):
            return proc
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not reach the step")


def test_kill_9_then_corrupted_latest_checkpoint_resumes_exactly(uninterrupted, tmp_path):
    bench, expected = uninterrupted
    workdir = tmp_path / "killed"
    proc = _start_and_wait(workdir, bench, 18, committed="16")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Corrupt the newest checkpoint: the resumed run must fall back to step 8.
    newest = workdir / "teacher" / "checkpoints" / "latest" / "16"
    for path in (newest / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    _run_to_end(workdir, bench)
    records = _records(workdir)
    restored = [r for r in records if r.get("restored")]
    assert restored == [{"step": 8, "restored": True}]
    assert [r["step"] for r in records] == [*range(1, 9), 8, *range(9, STEPS + 1)]
    got = _losses(workdir)
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step
    report = json.loads((workdir / "report.json").read_text())
    assert report["models"]["teacher"]["steps"] == STEPS


def test_sigterm_saves_exits_0_and_resumes_exactly(uninterrupted, tmp_path):
    bench, expected = uninterrupted
    workdir = tmp_path / "preempted"
    proc = _start_and_wait(workdir, bench, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b"preempted: saved step" in err
    saved = sorted(
        int(p.name)
        for p in (workdir / "teacher" / "checkpoints" / "latest").iterdir()
        if p.name.isdigit()
    )
    assert saved and saved[-1] >= 5
    _run_to_end(workdir, bench)
    assert {"step": saved[-1], "restored": True} in _records(workdir)
    got = _losses(workdir)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step
    # A finished stage is not redone: a third run restores nothing and trains nothing.
    before = _records(workdir)
    _run_to_end(workdir, bench)
    assert _records(workdir) == before
