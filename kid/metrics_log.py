"""Per-model training log (CONTRACT 5): W/<model>/metrics.jsonl plus TensorBoard scalars.

metrics.jsonl holds one JSON object per logged step, {"step": int, **metrics}. It is the
record a report and a resumed run rely on, so it stays valid JSON line by line: numpy and
jax scalars become Python numbers, non-finite values become null (json's NaN is not JSON),
and a line torn by a killed process is dropped when the log is reopened on a resume.

Lines are flushed as they are written (a crash loses at most the line being written) and
fsync'ed only on close, so logging costs no disk round trip per step.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
# Event file names hold the second and host only: a writer reopened within the same second
# (a quick resume, a test) would overwrite the earlier file without a suffix of its own.
_WRITER_IDS = itertools.count()


def scalar(value: Any) -> Any:
    """A Python int / float / bool for a numeric scalar (numpy, jax or Python); str and None
    pass through. Raises TypeError for anything else, e.g. an array of several values."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "biuf":
        raise TypeError(f"not a numeric scalar: {type(value).__name__} {array.shape}")
    if array.dtype.kind == "b":
        return bool(array)
    return int(array) if array.dtype.kind in "iu" else float(array)


def json_value(value: Any) -> Any:
    """`scalar(value)` with NaN / inf as None, so json.dumps writes valid JSON (null)."""
    value = scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parse_line(line: str) -> dict | None:
    """The object on one line, or None for a torn, non-JSON or non-object line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: str | os.PathLike[str]) -> list[dict]:
    """The records of a metrics.jsonl, in order, skipping torn or invalid lines."""
    with open(path, encoding="utf-8") as f:
        records = (_parse_line(line) for line in f)
        return [r for r in records if r is not None]


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _truncate_to_step(path: str, step: int) -> None:
    """Rewrites `path` atomically (temp file + os.replace) keeping only the valid records
    with "step" <= `step`: what a run resumed from the checkpoint at `step` has kept."""
    kept = []
    if os.path.exists(path):
        kept = [r for r in read_metrics(path) if _is_step(r.get("step")) and r["step"] <= step]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsLog:
    """Appends training metrics to directory/metrics.jsonl and directory/tb/ (TensorBoard).

    directory: W/<model name>/, created if needed.
    enabled: False on non-zero processes of a multi-host run: every method is then a no-op
      and nothing is created.
    restored_step: the step of the checkpoint a resumed run restored. The log first drops
      the lines past it (those steps are redone) and torn lines, then appends
      {"step": restored_step, "restored": true}; TensorBoard hides its own events past it
      (SummaryWriter purge_step).
    restored_step None means a fresh run: an existing metrics.jsonl is emptied (and
      TensorBoard hides earlier events from step 0 on). Whether a
      run is fresh or resumed is the caller's decision (it knows whether a checkpoint was
      restored); the log does not guess from the files it finds.
    tensorboard: False writes metrics.jsonl only (and does not import tensorboardX).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        enabled: bool = True,
        restored_step: int | None = None,
        tensorboard: bool = True,
    ):
        self.enabled = enabled
        self.path = os.path.join(os.fspath(directory), METRICS_FILE)
        self._file = None
        self._writer = None
        if not enabled:
            return
        os.makedirs(directory, exist_ok=True)
        if tensorboard:
            import tensorboardX  # deferred: only runs that log to TensorBoard need it

            purge = 0 if restored_step is None else int(restored_step) + 1
            self._writer = tensorboardX.SummaryWriter(
                os.path.join(os.fspath(directory), TENSORBOARD_DIR),
                purge_step=purge,
                filename_suffix=f".{os.getpid()}.{next(_WRITER_IDS)}",
            )
        if restored_step is None:
            self._file = open(self.path, "w", encoding="utf-8")
        else:
            _truncate_to_step(self.path, restored_step)
            self._file = open(self.path, "a", encoding="utf-8")
            self._append({"step": int(restored_step), "restored": True})

    def _append(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Logs `metrics` at `step`: one JSON line, and one TensorBoard scalar per number."""
        if not self.enabled:
            return
        if "step" in metrics:
            raise ValueError("metrics must not hold a 'step' key: it is the step argument")
        step = int(step)
        values = {key: scalar(value) for key, value in metrics.items()}
        self._append({"step": step, **{k: json_value(v) for k, v in values.items()}})
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flushes and fsyncs metrics.jsonl, and flushes and closes the TensorBoard writer."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
