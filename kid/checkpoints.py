"""Checkpoints of a training run: the latest few for resuming, and the best one kept apart.

Layout under ``directory``::

    latest/<step>/       the newest ``keep`` saves (orbax CheckpointManager, LatestN policy)
      state/             the train state (StandardSave), restored into the caller's shardings
      data_state/        the grain iterator's get_state() (JsonSave), when one was given
    best/best.json       {"step": int, "score": float}: the best evaluated step so far
    best/<step>/         its trainable params (StandardSave); only the step best.json names
    quarantine/          unrestorable step directories moved out of latest/ by restore()

API (on a multi-host run every process calls save, restore, save_best, restore_best, wait and
close, with the same arguments: orbax writes each process's shards and syncs the processes)::

    ckpt = Checkpoints(directory, keep=2, async_save=True)
    ckpt.save(step, state, data_state=it.get_state())    # async: returns while writing
    ckpt.restore(abstract_state) -> (step, state, data_state) | None
    ckpt.latest_step() -> int | None
    ckpt.save_best(step, params, score) -> bool          # True when it became the best
    ckpt.best() -> {"step": int, "score": float} | None
    ckpt.restore_best(abstract_params) -> params
    ckpt.wait(); ckpt.close()
    restore_params(directory, abstract_params, which="best" | "latest") -> (step, params)

``state`` is a pytree of jax arrays, a dict whose ``"params"`` entry holds the trainable
params (``restore_params(which="latest")`` reads that entry; pass ``key`` for another path).
Typed PRNG keys (``jax.random.key(0)``) are saved and restored as typed keys by orbax itself.
``abstract_state`` is the same tree of ``jax.ShapeDtypeStruct`` (with ``.sharding`` to restore
sharded arrays; ``jax.eval_shape`` output restores onto the default device).

Crash safety. orbax writes a step into ``<step>.orbax-checkpoint-tmp-*``, writes
``commit_success.txt`` and only then renames it to ``<step>``, and deletes the oldest step only
after the new one committed, so a killed save leaves the previous steps intact (the next
Checkpoints removes the tmp directory in the background; its first save waits for that).
``restore`` goes from the newest step down: a step directory without ``commit_success.txt``
or one whose restore fails (a deleted or truncated file, garbage metadata: OCDBT checksums
its data) is skipped with a warning naming it, and the skipped ones are then moved to
quarantine/ (orbax would otherwise refuse to save those step numbers again after the resume).
If steps exist but none restores, restore raises instead of returning None, so a wrong
``abstract_state`` never silently restarts training from scratch.

The best params are written to ``best/<step>/`` (orbax again writes a tmp directory and
renames it); best.json is then replaced atomically (write a temp file, rename) and only after
that is the previous best directory deleted. Dev EX arrives from a background scorer after
the eval, so the caller keeps a copy of the evaluated params and calls ``save_best`` when the
score arrives. With ``async_save`` the params write continues in the background and best.json
is updated by the next ``save_best``, ``wait`` or ``close``; a run killed before then keeps
the previous best. Only process 0 writes best.json and deletes directories; ``score`` must be
the same on every process.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers

COMMIT_FILE = "commit_success.txt"  # orbax writes it into every step before committing it
_STATE = "state"
_DATA = "data_state"
_BEST_JSON = "best.json"


def _absolute(directory: str) -> epath.Path:
    """orbax writes only to absolute paths; a relative one is the process's cwd's."""
    return epath.Path(os.path.abspath(directory))


def _manager(root: epath.Path, *, keep: int | None, async_save: bool) -> ocp.CheckpointManager:
    """The orbax manager of ``root``; ``keep=None`` opens it read-only (prediction tools)."""
    if keep is None:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    else:
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
    return ocp.CheckpointManager(root, options=options)


def _all_agree(ok: bool) -> bool:
    """Whether every process restored the step: they must all resume from the same one."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _newest_restorable(
    manager: ocp.CheckpointManager, attempt: Callable[[int], Any]
) -> tuple[int | None, Any, list[int]]:
    """(step, attempt(step), skipped newer steps) for the newest step that restores; step is
    None when no committed step exists. Raises when committed steps exist but none restores."""
    skipped, errors = [], []
    for step in sorted(manager.all_steps(), reverse=True):
        path = manager.directory / str(step)
        if not (path / COMMIT_FILE).exists():
            logging.warning("checkpoint %s is partial (no %s): skipped", path, COMMIT_FILE)
            skipped.append(step)
            continue
        try:
            restored, error = attempt(step), None
        except Exception as e:  # any unreadable step is skipped; see errors
            restored, error = None, e
        if _all_agree(error is None):
            return step, restored, skipped
        error = error or RuntimeError("another process could not restore it")
        logging.warning("checkpoint %s cannot be restored, skipped: %r", path, error)
        skipped.append(step)
        errors.append(f"{path}: {error!r}")
    if errors:
        raise RuntimeError("no checkpoint could be restored:\n" + "\n".join(errors))
    return None, None, skipped


def _read_best(root: epath.Path) -> dict | None:
    path = root / _BEST_JSON
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return {"step": int(record["step"]), "score": float(record["score"])}


def _nested(key: Sequence[str], leaf: Any) -> Any:
    for name in reversed(key):
        leaf = {name: leaf}
    return leaf


class Checkpoints:
    """Latest-N checkpoints for resuming plus the best params, under one directory."""

    def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True):
        self.directory = _absolute(directory)
        self._latest = _manager(self.directory / "latest", keep=keep, async_save=async_save)
        self._best_root = self.directory / "best"
        self._best_root.mkdir(parents=True, exist_ok=True)
        handler = ocp.StandardCheckpointHandler()
        self._best_writer = (
            ocp.AsyncCheckpointer(handler) if async_save else ocp.Checkpointer(handler)
        )
        self._best = _read_best(self._best_root)  # includes a pending write
        self._pending_best: dict | None = None

    def save(
        self, step: int, state: Any, *, data_state: dict | None = None, force: bool = False
    ) -> None:
        """Saves ``state`` (and ``data_state``) as ``step``; waits for the previous save first.
        ``force`` is orbax's: save even a step older than the latest (never overwrites one)."""
        items = {_STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            items[_DATA] = ocp.args.JsonSave(data_state)
        if not self._latest.save(step, args=ocp.args.Composite(**items), force=force):
            logging.warning(
                "step %d not saved: it is not after the latest step %s (pass force=True)",
                step,
                self._latest.latest_step(),
            )

    def restore(self, abstract_state: Any) -> tuple[int, Any, dict | None] | None:
        """(step, state, data_state) of the newest restorable step, or None without one."""
        self._latest.wait_until_finished()
        self._latest.reload()  # pick up steps written by an earlier run; safe once idle

        def attempt(step: int) -> tuple[Any, dict | None]:
            items = {_STATE: ocp.args.StandardRestore(abstract_state)}
            has_data = (self._latest.directory / str(step) / _DATA).exists()
            if has_data:
                items[_DATA] = ocp.args.JsonRestore()
            restored = self._latest.restore(step, args=ocp.args.Composite(**items))
            return restored[_STATE], restored[_DATA] if has_data else None

        step, restored, skipped = _newest_restorable(self._latest, attempt)
        if skipped:
            self._quarantine(skipped)
        return None if step is None else (step, *restored)

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unrestorable steps out of latest/, so their step numbers can be saved again."""
        if jax.process_index() == 0:
            quarantine = self.directory / "quarantine"
            quarantine.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = quarantine / f"{step}.{time.time_ns()}"
                (self._latest.directory / str(step)).rename(target)
                logging.warning("moved unrestorable checkpoint step %d to %s", step, target)
        _sync("kid_checkpoints_quarantine")
        self._latest.reload()

    def latest_step(self) -> int | None:
        """The newest step saved (perhaps still being written) or found on disk."""
        return self._latest.latest_step()

    def save_best(self, step: int, params: Any, score: float) -> bool:
        """Keeps ``params`` as the best if ``score`` beats the best so far (ties keep the
        earlier); returns whether it did. A NaN score never becomes the best."""
        score = float(score)
        if math.isnan(score) or (self._best is not None and score <= self._best["score"]):
            return False
        self._finish_best()
        record = {"step": int(step), "score": score}
        if self._best is not None and self._best["step"] == record["step"]:
            self._write_best_json(record)  # same params, better score: nothing to write
        else:
            # force: a directory left by a killed save_best of this step is replaced.
            target = self._best_root / str(record["step"])
            self._best_writer.save(target, args=ocp.args.StandardSave(params), force=True)
            self._pending_best = record
        self._best = record
        if not isinstance(self._best_writer, ocp.AsyncCheckpointer):
            self._finish_best()
        return True

    def _finish_best(self) -> None:
        """Once the pending params write committed: points best.json at it and deletes the
        other directories in best/ (the previous best, leftovers of killed writes)."""
        if isinstance(self._best_writer, ocp.AsyncCheckpointer):
            self._best_writer.wait_until_finished()
        if self._pending_best is None:
            return
        record, self._pending_best = self._pending_best, None
        self._write_best_json(record)
        if jax.process_index() == 0:
            keep = {_BEST_JSON, str(record["step"])}
            for path in self._best_root.iterdir():
                if path.name in keep:
                    continue
                if path.is_dir():
                    path.rmtree()
                else:
                    path.unlink()
        _sync("kid_checkpoints_best")

    def _write_best_json(self, record: dict) -> None:
        if jax.process_index() == 0:
            tmp = self._best_root / f"{_BEST_JSON}.tmp"
            tmp.write_text(json.dumps(record))
            tmp.replace(self._best_root / _BEST_JSON)

    def best(self) -> dict | None:
        """{"step", "score"} of the best params kept (on disk once ``wait`` returns)."""
        return None if self._best is None else dict(self._best)

    def restore_best(self, abstract_params: Any) -> Any:
        """The best params, restored into ``abstract_params``' shardings and dtypes."""
        self._finish_best()
        return restore_params(str(self.directory), abstract_params, which="best")[1]

    def wait(self) -> None:
        """Blocks until pending saves (latest and best) are complete."""
        self._latest.wait_until_finished()
        self._finish_best()

    def close(self) -> None:
        """Finishes pending saves and releases orbax's threads."""
        self.wait()
        self._latest.close()
        self._best_writer.close()


def restore_params(
    directory: str,
    abstract_params: Any,
    *,
    which: str = "best",
    key: Sequence[str] = ("params",),
) -> tuple[int, Any]:
    """(step, params) from best/ or from the newest restorable latest/ step, where the params
    are ``state[key[0]][key[1]]...``; only they are read. Read-only: for prediction tools."""
    root = _absolute(directory)
    if which == "best":
        record = _read_best(root / "best")
        if record is None:
            raise FileNotFoundError(f"no best checkpoint under {root / 'best'}")
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            path = root / "best" / str(record["step"])
            return record["step"], checkpointer.restore(
                path, args=ocp.args.StandardRestore(abstract_params)
            )
    if which != "latest":
        raise ValueError(f"which must be 'best' or 'latest', not {which!r}")
    if not (root / "latest").exists():
        raise FileNotFoundError(f"no checkpoint under {root / 'latest'}")
    item = _nested(key, abstract_params)
    args = ocp.args.PyTreeRestore(
        item=item,
        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True,
    )
    with _manager(root / "latest", keep=None, async_save=False) as manager:

        def attempt(step: int) -> Any:
            tree = manager.restore(step, args=ocp.args.Composite(**{_STATE: args}))[_STATE]
            for name in key:
                tree = tree[name]
            return tree

        step, params, _ = _newest_restorable(manager, attempt)
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {root / 'latest'}")
    return step, params
