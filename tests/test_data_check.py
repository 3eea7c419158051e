"""`python -m kid.data.check DIR` on folders built here and on the real Spider folder."""

import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import time

import pytest

from kid.data import check

REPO = pathlib.Path(__file__).resolve().parents[1]


def _sqlite(path, tables=("Item",)):
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for t in tables:
        conn.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, Name TEXT)")
    conn.commit()
    conn.close()


def _entry(db_id, tables=("Item",)):
    columns = [[-1, "*"]] + [c for t, _ in enumerate(tables) for c in ([t, "id"], [t, "Name"])]
    return {
        "db_id": db_id,
        "table_names": [t.lower() for t in tables],
        "table_names_original": list(tables),
        "column_names": [[t, n.lower()] for t, n in columns],
        "column_names_original": columns,
        "column_types": ["text"] + ["number", "text"] * len(tables),
        "primary_keys": [1],
        "foreign_keys": [],
    }


def _record(db_id, question="How many?"):
    return {"db_id": db_id, "question": question, "query": "SELECT count(*) FROM Item"}


@pytest.fixture
def folder(tmp_path):
    """Every kind of problem the check reports, next to data that is fine."""
    d = tmp_path / "data"
    db = d / "database"
    _sqlite(db / "shop" / "shop.sqlite")
    _sqlite(db / "thin" / "thin.sqlite")  # tables.json names a second table it lacks
    (db / "broken").mkdir(parents=True)
    (db / "broken" / "broken.sqlite").write_bytes(b"not sqlite" * 200)
    (db / "pipe").mkdir()
    os.mkfifo(db / "pipe" / "pipe.sqlite")
    bad = _entry("keyless")
    bad["primary_keys"] = [0]
    entries = [_entry("shop"), _entry("thin", ("Item", "Gone")), bad, _entry("gone")]
    (d / "tables.json").write_text(json.dumps(entries))
    dev = [_record("shop"), _record("shop", ""), _record("gone"), _record("pipe")]
    dev += [_record("broken"), {"db_id": "../shop", "question": "q", "query": "SELECT 1"}]
    (d / "dev.json").write_text(json.dumps(dev))
    (d / "train.json").write_text(json.dumps([_record("shop"), _record("thin")]))
    (d / "manifest.json").write_text(json.dumps({"seed": 0}))  # not a split: skipped
    return d


def test_report_of_a_folder_with_problems(folder):
    report = check.check(folder)
    assert report.usable
    splits = {os.path.basename(s.path): s for s in report.splits}
    assert splits["dev.json"].examples == 4 and len(splits["dev.json"].malformed) == 2
    assert splits["train.json"].db_ids == {"shop": 1, "thin": 1}
    assert splits["manifest.json"].error is not None
    (layout,) = report.layouts.values()
    assert set(layout.schemas) == {"shop", "thin", "gone"}
    assert [p.db_id for p in layout.tables_problems] == ["keyless"]
    dbs = layout.databases
    assert dbs["shop"] is None
    assert dbs["gone"].startswith("missing") and "keyless" not in dbs  # refused, unused
    assert dbs["pipe"].startswith("not a regular file")
    assert dbs["broken"].startswith("unreadable")
    assert "gone" in dbs["thin"] and "tables.json" in dbs["thin"]


def test_cli_prints_the_summary_and_exits_0(folder, capsys):
    started = time.monotonic()
    assert check.main([str(folder)]) == 0
    assert time.monotonic() - started < 10  # the FIFO is never opened
    out = capsys.readouterr().out
    assert "dev.json: 4 examples on 4 databases" in out
    assert "2 malformed records" in out and "'db_id'" in out and "'question'" in out
    assert "1 examples on database gone: missing" in out
    assert "1 examples on database pipe: not a regular file" in out
    assert "no schema (neither tables.json nor a readable file): ['broken', 'pipe']" in out
    assert "keyless" in out and "'primary_keys'" in out
    assert "manifest.json: skipped" in out
    assert "tables file: 3 schemas, 1 entries refused" in out
    assert out.rstrip().splitlines()[-1].startswith("usable: 6 examples")


def test_bird_layout(tmp_path):
    _sqlite(tmp_path / "dev_databases" / "shop" / "shop.sqlite")
    (tmp_path / "dev_tables.json").write_text(json.dumps([_entry("shop")]))
    (tmp_path / "dev.json").write_text(json.dumps([{**_record("shop"), "evidence": "e"}]))
    report = check.check(tmp_path)
    assert report.usable and report.problems == 0
    (layout,) = report.layouts.values()
    assert layout.db_dir.endswith("dev_databases") and layout.databases == {"shop": None}


@pytest.mark.parametrize(
    "files",
    [{}, {"tables.json": "[]"}, {"dev.json": "[]"}, {"dev.json": "{"}, {"dev.json": '[{"a": 1}]'}],
)
def test_not_a_dataset_exits_nonzero(tmp_path, capsys, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert check.main([str(tmp_path)]) == 1
    assert "not a dataset" in capsys.readouterr().out


def test_missing_folder_exits_nonzero(tmp_path, capsys):
    assert check.main([str(tmp_path / "nope")]) == 1
    assert "not a folder" in capsys.readouterr().out


def test_real_spider(spider_dir):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kid.data.check", str(spider_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dev.json: 1034 examples on 20 databases" in out
    assert "62 examples on database wta_1: missing" in out
    assert "train_spider.json: 7000 examples on 140 databases" in out
    assert "tables file: 166 schemas, 0 entries refused" in out
    assert "databases: 163 readable, 3 with problems" in out
