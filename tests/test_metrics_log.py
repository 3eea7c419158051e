import json
import math
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from kid import metrics_log
from kid.metrics_log import MetricsLog, read_metrics


def _strict_lines(path):
    """Every line parsed as strict JSON (NaN / Infinity rejected)."""

    def reject(name):
        raise ValueError(f"not JSON: {name}")

    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line, parse_constant=reject) for line in text.splitlines()]


def _events(path):
    """The Event protos of one TFRecord event file (length, crc, data, crc)."""
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        yield event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        pos += 12 + n + 4


def _scalars(directory):
    files = sorted((directory / "tb").glob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    return {
        (v.tag, e.step, v.simple_value) for f in files for e in _events(f) for v in e.summary.value
    }


def _purges(directory):
    """Steps of the SessionLog START events: TensorBoard drops earlier files' events there."""
    return [
        e.step
        for f in (directory / "tb").glob("events.out.tfevents.*")
        for e in _events(f)
        if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START
    ]


def test_write_converts_scalars_and_nonfinite_to_null(tmp_path):
    import jax.numpy as jnp

    with MetricsLog(tmp_path / "student", tensorboard=False) as log:
        log.write(np.int64(1), {"loss": np.float32(0.5), "tokens": np.int32(7), "lr": 1e-3})
        log.write(2, {"loss": jnp.asarray(0.25), "nan": float("nan"), "inf": np.inf})
    assert _strict_lines(tmp_path / "student" / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5, "tokens": 7, "lr": 1e-3},
        {"step": 2, "loss": 0.25, "nan": None, "inf": None},
    ]


def test_write_rejects_step_key_and_arrays(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="step"):
            log.write(1, {"step": 3})
        with pytest.raises(TypeError, match="not a numeric scalar"):
            log.write(1, {"loss": np.ones(2)})


def test_resume_drops_later_and_torn_lines_then_appends(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        for step in range(1, 6):
            log.write(step, {"loss": 1.0 / step})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 6, "loss": 0.1')  # torn by kill -9: no closing brace, no newline

    with MetricsLog(tmp_path, restored_step=3, tensorboard=False) as log:
        log.write(4, {"loss": 0.3})
    assert _strict_lines(path) == [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 0.5},
        {"step": 3, "loss": 1.0 / 3},
        {"step": 3, "restored": True},
        {"step": 4, "loss": 0.3},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left

    with MetricsLog(tmp_path, restored_step=4, tensorboard=False):
        pass  # a second resume keeps the first marker and adds its own
    assert [r.get("restored", False) for r in read_metrics(path)] == [0, 0, 0, 1, 0, 1]


def test_resume_without_a_log_starts_with_the_marker(tmp_path):
    MetricsLog(tmp_path / "m", restored_step=10, tensorboard=False).close()
    assert read_metrics(tmp_path / "m" / "metrics.jsonl") == [{"step": 10, "restored": True}]


def test_fresh_run_empties_an_existing_log(tmp_path):
    with MetricsLog(tmp_path) as log:
        log.write(1, {"loss": 2.0})
    with MetricsLog(tmp_path) as log:
        log.write(1, {"loss": 3.0})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 3.0}]
    assert sorted(_purges(tmp_path)) == [0, 0]  # TensorBoard hides the earlier run


def test_read_metrics_skips_invalid_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n[1, 2]\ngarbage\n\n{"step": 2}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]


def test_disabled_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path / "student", enabled=False, restored_step=3)
    log.write(1, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "student").exists()


def test_tensorboard_holds_the_scalars(tmp_path):
    with MetricsLog(tmp_path) as log:
        log.write(1, {"loss": 0.5, "dev/ex": np.float64(0.25), "note": "text"})
        log.write(2, {"loss": 0.75})
    assert _scalars(tmp_path) == {("loss", 1, 0.5), ("dev/ex", 1, 0.25), ("loss", 2, 0.75)}


def test_resumed_tensorboard_keeps_earlier_events_and_purges_redone_steps(tmp_path):
    with MetricsLog(tmp_path) as log:
        for step in (1, 2, 3):
            log.write(step, {"loss": float(step)})
    with MetricsLog(tmp_path, restored_step=1) as log:  # within the same second
        log.write(2, {"loss": 20.0})
    assert _scalars(tmp_path) == {("loss", s, v) for s, v in ((1, 1), (2, 2), (3, 3), (2, 20))}
    # TensorBoard hides the first run's events from step 2 on
    assert sorted(_purges(tmp_path)) == [0, 2]


def test_json_value():
    assert metrics_log.json_value(np.bool_(True)) is True
    assert metrics_log.json_value(np.float16(-np.inf)) is None
    assert math.isnan(metrics_log.scalar(np.float32("nan")))
    assert metrics_log.json_value("dev") == "dev"
