"""`python -m kid.evaluate` on hostile arguments and files (issue 12): every bad argument
is a clear error before scoring, every bad line is one verdict, never the run."""

import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from kid import evaluate
from kid.sql import scoring, sql_files

REPO = pathlib.Path(__file__).resolve().parents[1]
_COLUMNS = [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]]
SHOP_TABLES = {
    "db_id": "shop",
    "table_names": ["item"],
    "table_names_original": ["item"],
    "column_names": _COLUMNS,
    "column_names_original": _COLUMNS,
    "column_types": ["text", "number", "text", "number"],
    "primary_keys": [1],
    "foreign_keys": [],
}
GOOD = "SELECT name FROM item WHERE price > 2"


@pytest.fixture
def data(tmp_path) -> pathlib.Path:
    """tmp_path with database/shop/shop.sqlite and a tables.json listing only shop."""
    (tmp_path / "database" / "shop").mkdir(parents=True)
    conn = sqlite3.connect(tmp_path / "database" / "shop" / "shop.sqlite")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(1, "pen", 1.5), (2, "ink", 3.0)])
    conn.commit()
    conn.close()
    (tmp_path / "tables.json").write_text(json.dumps([SHOP_TABLES]))
    return tmp_path


def _argv(data: pathlib.Path, gold, pred, *extra: str) -> list[str]:
    return [
        *("--gold", str(gold), "--pred", str(pred), "--db-dir", str(data / "database")),
        *("--table", str(data / "tables.json"), "--workers", "1", *extra),
    ]


def _files(data: pathlib.Path, gold: bytes, pred: bytes) -> tuple[pathlib.Path, pathlib.Path]:
    (data / "gold.sql").write_bytes(gold)
    (data / "pred.sql").write_bytes(pred)
    return data / "gold.sql", data / "pred.sql"


def _verdicts(data: pathlib.Path, gold, pred, *extra: str) -> list[dict]:
    out = data / "out.jsonl"
    assert evaluate.main(_argv(data, gold, pred, "--per-example", str(out), *extra)) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "kid.evaluate", *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--timeout", "nan", "must be in (0, 86400] seconds"),
        ("--timeout", "inf", "must be in (0, 86400] seconds"),
        ("--timeout", "1e300", "must be in (0, 86400] seconds"),
        ("--timeout", "0", "must be in (0, 86400] seconds"),
        ("--timeout", "-1", "must be in (0, 86400] seconds"),
        ("--timeout", "soon", "expected seconds"),
        ("--workers", "0", "must be 1 to"),
        ("--workers", str(evaluate.MAX_WORKERS + 1), "must be 1 to"),
        ("--workers", "2.5", "expected a whole number"),
        ("--per-example", "no/such/folder/out.jsonl", "does not exist"),
        ("--per-example", ".", "is a folder"),
    ],
)
def test_bad_arguments_are_clear_errors(data, capsys, flag, value, message):
    gold, pred = _files(data, f"{GOOD}\tshop\n".encode(), f"{GOOD}\n".encode())
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(_argv(data, gold, pred, flag, value))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: " in err and message in err


def test_bad_argument_in_a_real_process_has_no_traceback(data):
    gold, pred = _files(data, f"{GOOD}\tshop\n".encode(), f"{GOOD}\n".encode())
    run = _cli(*_argv(data, gold, pred, "--timeout", "inf"))
    assert run.returncode == 2 and "argument --timeout" in run.stderr
    assert "Traceback" not in run.stderr


def test_help_documents_every_limit():
    run = _cli("--help")
    assert run.returncode == 0
    text = " ".join(run.stdout.split())  # argparse wraps to the terminal width
    for limit in (
        f"over {sql_files.MAX_LINE_CHARS:,} characters",
        f"within {sql_files.MAX_SKIP_CHARS:,} characters",
        f"= {evaluate.MAX_WORKERS} (default 2)",
        "(0, 86400] (default 30)",
        "too_long",
        "not_utf8",
        "invalid_db_id",
        "missing_database",
    ):
        assert limit in text, limit


def test_per_example_folder_is_checked_before_scoring(data, capsys, monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr(scoring.Scorer, "__init__", no_scoring)
    gold, pred = _files(data, f"{GOOD}\tshop\n".encode(), f"{GOOD}\n".encode())
    target = data / "missing" / "out.jsonl"
    with pytest.raises(SystemExit):
        evaluate.main(_argv(data, gold, pred, "--per-example", str(target)))
    assert f"folder {data / 'missing'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_per_example_file_follows_the_umask(data, umask):
    gold, pred = _files(data, f"{GOOD}\tshop\n".encode(), f"{GOOD}\n".encode())
    old = os.umask(umask)
    try:
        _verdicts(data, gold, pred, "--etype", "match")
    finally:
        os.umask(old)
    assert (data / "out.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in os.listdir(data) if p.endswith(".tmp")]  # no temp file left


def test_bom_is_stripped(data):
    bom = b"\xef\xbb\xbf"
    gold, pred = _files(data, bom + f"{GOOD}\tshop\n".encode(), bom + f"{GOOD}\n".encode())
    [v] = _verdicts(data, gold, pred)
    assert (v["exec"], v["match"], v["error"]) == (1, 1, None)


def test_invalid_utf8_is_that_lines_verdict(data, capsys):
    gold = f"{GOOD}\tshop\n".encode() * 2 + b"SELECT '\xff'\tshop\n"
    pred = f"{GOOD}\nSELECT name FROM item WHERE name = '\xc3'\n{GOOD}\n".encode("latin-1")
    gold, pred = _files(data, gold, pred)
    verdicts = _verdicts(data, gold, pred)
    assert [(v["exec"], v["match"], v["error"]) for v in verdicts] == [
        (1, 1, None),
        (0, 0, "not_utf8"),
        (0, 0, "gold_not_utf8"),
    ]
    err = capsys.readouterr().err
    assert f"{pred}:2: not valid UTF-8" in err and f"{gold}:3: not valid UTF-8" in err


def test_invalid_db_id_is_that_lines_verdict(data):
    bad = ["/etc", "../shop", "", "."]
    gold = "".join(f"{GOOD}\t{db_id}\n" for db_id in [*bad, "shop"]).encode()
    gold, pred = _files(data, gold, f"{GOOD}\n".encode() * 5)
    verdicts = _verdicts(data, gold, pred)
    assert [(v["db_id"], v["exec"], v["error"]) for v in verdicts] == [
        *((db_id, 0, "invalid_db_id") for db_id in bad),
        ("shop", 1, None),
    ]


def test_a_20mb_line_is_one_too_long_verdict(data):
    gold = f"{GOOD}\tshop\n".encode() * 3
    pred = f"{GOOD}\nSELECT '{'x' * (20 << 20)}'\r\n{GOOD}".encode()
    gold, pred = _files(data, gold, pred)
    verdicts = _verdicts(data, gold, pred)
    assert [(v["exec"], v["match"], v["error"]) for v in verdicts] == [
        (1, 1, None),
        (0, 0, "too_long"),
        (1, 1, None),
    ]
    assert verdicts[1]["hardness"] == verdicts[0]["hardness"] == "easy"


def test_a_too_long_gold_line_is_counted_wrong(data):
    gold = f"SELECT '{'x' * sql_files.MAX_LINE_CHARS}'\tshop\n{GOOD}\tshop\n".encode()
    gold, pred = _files(data, gold, f"{GOOD}\n{GOOD}\n".encode())
    verdicts = _verdicts(data, gold, pred, "--etype", "match")
    assert [(v["exec"], v["match"], v["error"]) for v in verdicts] == [
        (None, 0, "gold_too_long"),
        (None, 1, None),
    ]


def test_dev_zero_prediction_costs_one_verdict_in_bounded_memory(data):
    gold, _ = _files(data, f"{GOOD}\tshop\n".encode(), b"")
    out = data / "out.jsonl"
    argv = _argv(data, gold, "/dev/zero", "--etype", "match", "--per-example", str(out))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # The child reports its own peak (VmHWM, reset at exec): rusage's maxrss would include
    # the moments before exec, when the child is a copy of this (large) test process.
    code = (
        "import sys; from kid import evaluate; rc = evaluate.main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print('peak_kib', hwm.split()[1], file=sys.stderr); sys.exit(rc)"
    )
    start = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, stderr=subprocess.PIPE, timeout=120
    )
    err = process.stderr.decode()
    assert process.returncode == 0, err
    assert time.monotonic() - start < 30
    peak_kib = int(err.split("peak_kib")[-1].split()[0])
    assert peak_kib < 300 << 10  # the 256 Mi characters skipped are not kept
    [v] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (v["match"], v["error"]) == (0, "too_long")
    assert "the rest of the file is not read" in err


def test_endless_stream_after_good_lines_costs_one_verdict(data):
    gold, _ = _files(data, f"{GOOD}\tshop\n".encode() * 2, b"")
    fifo = data / "pred.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(f"{GOOD}\n".encode())
                while True:
                    f.write(b"x" * (1 << 20))
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    start = time.monotonic()
    verdicts = _verdicts(data, gold, fifo, "--etype", "match")
    assert time.monotonic() - start < 30
    assert [(v["match"], v["error"]) for v in verdicts] == [(1, None), (0, "too_long")]
    writer.join(timeout=10)


def test_count_mismatch_stays_an_error(data, capsys):
    gold, pred = _files(data, f"{GOOD}\tshop\n".encode(), f"{GOOD}\n{GOOD}\n{GOOD}\n".encode())
    assert evaluate.main(_argv(data, gold, pred)) == 2
    assert "has more predictions than the 1 gold queries" in capsys.readouterr().err
    gold, _ = _files(data, f"{GOOD}\tshop\n".encode() * 2, b"")
    assert evaluate.main(_argv(data, gold, "/dev/zero", "--etype", "match")) == 2
    err = capsys.readouterr().err
    assert "has 1 predictions but" in err and "the rest of the file is not read" in err


def test_db_ids_missing_from_tables_and_folder_score_the_rest(data, capsys):
    gold = f"{GOOD}\tshop\nSELECT count(*) FROM race\tdk_only\n{GOOD}\tshop\n".encode()
    gold, pred = _files(data, gold, f"{GOOD}\nSELECT 1\n\xff\n".encode("latin-1"))
    verdicts = _verdicts(data, gold, pred)
    assert [(v["db_id"], v["exec"], v["match"], v["error"]) for v in verdicts] == [
        ("shop", 1, 1, None),
        ("dk_only", None, None, "missing_database"),
        ("shop", 0, 0, "not_utf8"),
    ]
    assert verdicts[1]["hardness"] == "easy"
    printed = capsys.readouterr().out
    assert "1 examples excluded from execution (dk_only 1)" in printed
    assert "exact match scored on 2" in printed


def test_reader_keeps_the_line_semantics_of_text_mode(tmp_path):
    path = tmp_path / "pred.sql"
    path.write_bytes(b"\xef\xbb\xbfSELECT 1\tdb\r\n\rSELECT 2 \rlast")
    assert sql_files.read_predictions(path) == ["SELECT 1", "", "SELECT 2", "last"]
    assert sql_files.read_predictions(path, max_lines=2) == ["SELECT 1", ""]
    path.write_bytes(b"")
    assert sql_files.read_predictions(path) == []


def test_real_spider_gold_with_db_ids_outside_tables_json(spider_dir, tmp_path):
    """Spider-DK's situation on the real files: gold lines whose db_ids neither Spider's
    tables.json nor its database folder knows are missing_database; the rest are scored."""
    dev = json.loads((spider_dir / "dev.json").read_text())[:12]
    lines = [f"{e['query']}\t{e['db_id']}" for e in dev]
    lines[3] = "SELECT name FROM singer\tdk_extra_db"  # a Spider-DK-only database
    gold, pred = _files(
        tmp_path,
        "\n".join(lines).encode(),
        "\n".join(line.split("\t")[0] for line in lines).encode(),
    )
    out = tmp_path / "out.jsonl"
    argv = [
        *("--gold", str(gold), "--pred", str(pred), "--db-dir", str(spider_dir / "database")),
        *("--table", str(spider_dir / "tables.json"), "--workers", "1", "--per-example", str(out)),
    ]
    assert evaluate.main(argv) == 0
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert verdicts[3]["error"] == "missing_database" and verdicts[3]["exec"] is None
    assert all(v["exec"] == 1 and v["match"] == 1 for i, v in enumerate(verdicts) if i != 3)
