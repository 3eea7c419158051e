"""kid.checkpoints on real orbax writes: round trips, retention, the best store, and recovery
from corrupted, partial and killed saves."""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from kid import checkpoints
from kid.checkpoints import Checkpoints, restore_params

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_state(step: int, shape=(4, 8)) -> dict:
    return {
        "params": {
            "w": jnp.full(shape, float(step), jnp.float32),
            "b": jnp.arange(3, dtype=jnp.int32) + step,
        },
        "opt": {"mu": jnp.full((5,), -float(step), jnp.float32)},
        "step": jnp.asarray(step, jnp.int32),
        "rng": jax.random.key(step),
    }


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def assert_same(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        if jax.dtypes.issubdtype(e.dtype, jax.dtypes.prng_key):
            a, e = jax.random.key_data(a), jax.random.key_data(e)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING)
    return caplog


def saved(directory, steps, **kwargs) -> None:
    ckpt = Checkpoints(str(directory), **kwargs)
    for step in steps:
        ckpt.save(step, make_state(step), data_state={"epoch": step, "pos": [step, 7]})
    ckpt.close()


def test_save_two_steps_restore_latest(tmp_path):
    ckpt = Checkpoints(str(tmp_path))
    assert ckpt.restore(abstract(make_state(0))) is None and ckpt.latest_step() is None
    ckpt.save(1, make_state(1), data_state={"epoch": 0, "pos": [1, 2]})
    ckpt.save(2, make_state(2), data_state={"epoch": 1, "pos": [3, 4]})
    assert ckpt.latest_step() == 2
    ckpt.close()

    ckpt = Checkpoints(str(tmp_path))
    step, state, data_state = ckpt.restore(abstract(make_state(0)))
    assert step == 2 and data_state == {"epoch": 1, "pos": [3, 4]}
    assert_same(state, make_state(2))
    assert state["rng"].dtype == jax.random.key(0).dtype  # a typed key stays a typed key
    # jax.eval_shape's structs (no sharding) restore too.
    assert_same(ckpt.restore(jax.eval_shape(lambda: make_state(0)))[1], make_state(2))
    ckpt.close()


def test_relative_directory_saves_and_restores(tmp_path, monkeypatch):
    """orbax refuses relative paths; `--workdir workdir/demo` must work all the same."""
    monkeypatch.chdir(tmp_path)
    ckpt = Checkpoints("run/checkpoints")
    ckpt.save(3, make_state(3))
    assert ckpt.save_best(3, make_state(3)["params"], 0.5)
    ckpt.close()
    assert (tmp_path / "run" / "checkpoints" / "latest" / "3").is_dir()
    params = abstract(make_state(0)["params"])
    assert restore_params("run/checkpoints", params)[0] == 3
    assert Checkpoints("run/checkpoints").restore(abstract(make_state(0)))[0] == 3


def test_without_data_state(tmp_path):
    ckpt = Checkpoints(str(tmp_path), async_save=False)
    ckpt.save(5, make_state(5))
    assert ckpt.restore(abstract(make_state(0)))[::2] == (5, None)
    ckpt.close()


def test_keep_two_latest_and_best_survives(tmp_path):
    ckpt = Checkpoints(str(tmp_path), keep=2)
    assert ckpt.save_best(1, make_state(1)["params"], 0.5)
    for step in range(1, 6):
        ckpt.save(step, make_state(step))
    ckpt.wait()
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["4", "5"]
    assert (tmp_path / "best" / "1").is_dir() and ckpt.best() == {"step": 1, "score": 0.5}
    ckpt.close()


def test_save_best(tmp_path):
    ckpt = Checkpoints(str(tmp_path))
    assert ckpt.best() is None
    assert ckpt.save_best(10, make_state(10)["params"], 0.4)
    assert ckpt.save_best(20, make_state(20)["params"], 0.6)
    # Until the new params are complete, best.json and best/10 stay as they were.
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record == {"step": 10, "score": 0.4} and (tmp_path / "best" / "10").is_dir()
    assert not ckpt.save_best(30, make_state(30)["params"], 0.5)  # worse
    assert not ckpt.save_best(40, make_state(40)["params"], 0.6)  # tie keeps the earlier
    assert not ckpt.save_best(50, make_state(50)["params"], float("nan"))
    assert ckpt.best() == {"step": 20, "score": 0.6}
    ckpt.wait()
    assert json.loads((tmp_path / "best" / "best.json").read_text()) == {"step": 20, "score": 0.6}
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["20", "best.json"]
    params = abstract(make_state(0)["params"])
    assert_same(ckpt.restore_best(params), make_state(20)["params"])
    ckpt.close()

    # A new run reads the record and compares against it.
    ckpt = Checkpoints(str(tmp_path), async_save=False)
    assert ckpt.best() == {"step": 20, "score": 0.6}
    assert not ckpt.save_best(60, make_state(60)["params"], 0.55)
    assert ckpt.save_best(70, make_state(70)["params"], 0.7)
    assert json.loads((tmp_path / "best" / "best.json").read_text()) == {"step": 70, "score": 0.7}
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["70", "best.json"]
    ckpt.close()
    step, restored = restore_params(str(tmp_path), params)
    assert step == 70
    assert_same(restored, make_state(70)["params"])


def test_restore_params_latest(tmp_path):
    saved(tmp_path, [1, 2])
    step, params = restore_params(str(tmp_path), abstract(make_state(0)["params"]), which="latest")
    assert step == 2
    assert_same(params, make_state(2)["params"])
    step, mu = restore_params(
        str(tmp_path), abstract(make_state(0)["opt"]), which="latest", key=["opt"]
    )
    assert step == 2
    assert_same(mu, make_state(2)["opt"])
    with pytest.raises(FileNotFoundError):
        restore_params(str(tmp_path), {}, which="best")
    with pytest.raises(FileNotFoundError):
        restore_params(str(tmp_path / "nothing"), {}, which="latest")


def _truncate_data(step_dir: pathlib.Path) -> None:
    for path in (step_dir / "state" / "d").iterdir():
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)


def _delete_data(step_dir: pathlib.Path) -> None:
    for path in (step_dir / "state" / "d").iterdir():
        path.unlink()


def _garbage_metadata(step_dir: pathlib.Path) -> None:
    (step_dir / "state" / "_METADATA").write_text("{not json")


def _garbage_json(step_dir: pathlib.Path) -> None:
    (step_dir / "data_state" / "metadata").write_text("{not json")


# A failed tensorstore read can call back into orbax's closed event loop after the error
# was raised; pytest reports that as unraisable, harmlessly.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "corrupt", [_truncate_data, _delete_data, _garbage_metadata, _garbage_json]
)
def test_corrupted_latest_falls_back(tmp_path, warnings, corrupt):
    saved(tmp_path, [1, 2])
    corrupt(tmp_path / "latest" / "2")
    ckpt = Checkpoints(str(tmp_path))
    step, state, data_state = ckpt.restore(abstract(make_state(0)))
    assert step == 1 and data_state == {"epoch": 1, "pos": [1, 7]}
    assert_same(state, make_state(1))
    assert str(tmp_path / "latest" / "2") in warnings.text
    # The bad step is moved aside, so the resumed run can save step 2 again.
    assert [p.name.split(".")[0] for p in (tmp_path / "quarantine").iterdir()] == ["2"]
    assert ckpt.latest_step() == 1
    ckpt.save(2, make_state(22))
    assert ckpt.restore(abstract(make_state(0)))[0] == 2
    ckpt.close()


def test_partial_steps_ignored(tmp_path, warnings):
    saved(tmp_path, [1, 2], keep=3)
    latest = tmp_path / "latest"
    # A killed save: orbax's tmp directory with part of a step.
    tmp_dir = latest / "3.orbax-checkpoint-tmp-1234567890"
    tmp_dir.mkdir()
    (tmp_dir / "state").mkdir()
    (tmp_dir / "state" / "_METADATA").write_text("{")
    # A step directory without its commit marker (a save that never committed).
    os.rename(latest / "2" / checkpoints.COMMIT_FILE, tmp_path / "marker")
    ckpt = Checkpoints(str(tmp_path))
    step, state, _ = ckpt.restore(abstract(make_state(0)))
    assert step == 1
    assert_same(state, make_state(1))
    assert str(latest / "2") in warnings.text and "partial" in warnings.text
    ckpt.save(2, make_state(2))
    ckpt.wait()
    # orbax removed the tmp directory (in the background, awaited by the first save).
    assert sorted(p.name for p in latest.iterdir()) == ["1", "2"]
    ckpt.close()


def test_nothing_restorable_raises(tmp_path):
    saved(tmp_path, [1])
    ckpt = Checkpoints(str(tmp_path))
    with pytest.raises(RuntimeError, match="no checkpoint could be restored"):
        ckpt.restore(abstract(make_state(0)["params"]))  # the caller's tree is wrong
    assert (tmp_path / "latest" / "1").is_dir()  # and nothing was moved
    ckpt.close()


KILLED_SAVE = """
import asyncio, sys, time
import jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
from kid.checkpoints import Checkpoints

def state(value):
    return {"params": {"w": jnp.full((2048, 4096), value, jnp.float32)}}

ckpt = Checkpoints(sys.argv[1])
ckpt.save(1, state(1.0))
ckpt.wait()
# Hold the commit (the rename of the tmp directory) open, so the kill lands mid-save.
finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def slow_finalize(self):
    await asyncio.sleep(120)
    await finalize(self)
atomicity.AtomicRenameTemporaryPath.finalize = slow_finalize
ckpt.save(2, state(2.0))  # async: returns while the 32 MiB array is written
while not list(ckpt.directory.glob("latest/2.orbax-checkpoint-tmp*")):
    time.sleep(0.01)  # orbax may create the tmp directory in the background
print("SAVING", flush=True)
time.sleep(120)
"""


def test_killed_save_keeps_previous(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "SAVING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (tmp_path / "latest").iterdir())
    assert names[0] == "1" and names[1].startswith("2.orbax-checkpoint-tmp"), names

    template = {"params": {"w": jnp.zeros((2048, 4096), jnp.float32)}}
    ckpt = Checkpoints(str(tmp_path))
    step, state, _ = ckpt.restore(abstract(template))
    assert step == 1 and bool(jnp.all(state["params"]["w"] == 1.0))
    ckpt.save(2, {"params": {"w": jnp.full((2048, 4096), 2.0, jnp.float32)}})
    step, state, _ = ckpt.restore(abstract(template))
    assert step == 2 and bool(jnp.all(state["params"]["w"] == 2.0))
    ckpt.close()


def test_sharded_restore_one_device_mesh(tmp_path):
    saved(tmp_path, [3])
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding if x.ndim else None),
        make_state(0),
    )
    ckpt = Checkpoints(str(tmp_path))
    step, state, _ = ckpt.restore(target)
    assert step == 3
    assert_same(state, make_state(3))
    assert state["params"]["w"].sharding == sharding
    ckpt.close()


TWO_DEVICES = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from kid.checkpoints import Checkpoints

mesh = jax.make_mesh((2,), ("x",))
w = jax.device_put(jnp.arange(32.0).reshape(4, 8), NamedSharding(mesh, P("x")))
ckpt = Checkpoints(sys.argv[1])
ckpt.save(1, {"params": {"w": w}, "rng": jax.random.key(3)})
for spec in (P(None, "x"), P()):
    sharding = NamedSharding(mesh, spec)
    target = {
        "params": {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=sharding)},
        "rng": jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P())),
    }
    step, state, _ = ckpt.restore(target)
    assert step == 1 and state["params"]["w"].sharding == sharding
    np.testing.assert_array_equal(state["params"]["w"], np.arange(32.0).reshape(4, 8))
    expected_key = jax.random.key_data(jax.random.key(3))
    np.testing.assert_array_equal(jax.random.key_data(state["rng"]), expected_key)
ckpt.close()
print("OK")
"""


def test_resharded_restore_two_devices(tmp_path):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = {
        **os.environ,
        "XLA_FLAGS": flags,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TWO_DEVICES), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
