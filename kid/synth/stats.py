"""Statistics of a Spider-format benchmark folder: what the README's main command prints.

Everything is recomputed from the files (split json, tables.json, sqlite), not taken
from the generator, so the numbers also hold for a benchmark copied elsewhere, and for
real Spider folders laid out the same way.
"""

from __future__ import annotations

import collections
import os
import sqlite3
from typing import Any

from kid.data import schema as schema_lib
from kid.data import spider
from kid.sql import hardness, spider_parse
from kid.synth import constructs
from kid.synth import splits as splits_lib

SPLITS = ("train", "dev_in_domain", "dev", "val_in_domain")


def _db_path(folder: str, db_id: str) -> str:
    return schema_lib.db_file(os.path.join(folder, "database"), db_id)


def _database_stats(folder: str, schemas: dict[str, schema_lib.Schema]) -> dict[str, Any]:
    tables, rows, copies = [], [], []
    for db_id, schema in schemas.items():
        if not os.path.exists(_db_path(folder, db_id)):
            continue
        tables.append(len(schema.tables))
        conn = schema_lib.connect_read_only(_db_path(folder, db_id))
        for t in schema.tables:
            table = schema_lib.quote_identifier(t.original)
            rows.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        conn.close()
        ts_dir = os.path.join(folder, "database_ts", db_id)
        copies.append(len(os.listdir(ts_dir)) if os.path.isdir(ts_dir) else 0)
    return {
        "databases": len(tables),
        "tables": (min(tables), max(tables)),
        "rows": (min(rows), max(rows)),
        "ts_copies": (min(copies), max(copies)),
    }


def _suite_rows_rate(folder: str, examples) -> float | None:
    """Share of gold queries that return rows on every test-suite copy of their database
    (None without copies): an empty gold there lets any empty prediction pass TS."""
    copies: dict[str, list[sqlite3.Connection]] = {}
    counted = returned = 0
    for e in examples:
        if e.db_id not in copies:
            ts_dir = os.path.join(folder, "database_ts", e.db_id)
            paths = sorted(os.listdir(ts_dir)) if os.path.isdir(ts_dir) else []
            copies[e.db_id] = [schema_lib.connect_read_only(os.path.join(ts_dir, p)) for p in paths]
        if not copies[e.db_id]:
            continue
        counted += 1
        try:
            returned += all(
                splits_lib.non_empty(c.execute(e.query).fetchall()) for c in copies[e.db_id]
            )
        except sqlite3.Error:
            pass
    for conns in copies.values():
        for c in conns:
            c.close()
    return returned / counted if counted else None


def _split_stats(folder: str, split: str, schemas: dict[str, schema_lib.Schema]) -> dict[str, Any]:
    examples, _ = spider.read_examples(os.path.join(folder, f"{split}.json"), strict=True)
    levels, tags, held = collections.Counter(), collections.Counter(), collections.Counter()
    empty = errors = missing = 0
    connections: dict[str, sqlite3.Connection] = {}
    names = {db_id: schemas[db_id].lowercase_names() for db_id in {e.db_id for e in examples}}
    for e in examples:
        parsed = spider_parse.parse(e.query, names[e.db_id])
        levels[hardness.level(parsed)] += 1
        query_tags = constructs.constructs(parsed)
        tags.update(query_tags)
        held.update("+".join(pair) for pair in constructs.held_out(query_tags))
        if e.db_id not in connections:
            if not os.path.exists(_db_path(folder, e.db_id)):
                missing += 1
                continue
            connections[e.db_id] = schema_lib.connect_read_only(_db_path(folder, e.db_id))
        try:
            rows = connections[e.db_id].execute(e.query).fetchall()
            empty += not splits_lib.non_empty(rows)
        except sqlite3.Error:
            errors += 1
    for conn in connections.values():
        conn.close()
    n = len(examples)
    return {
        "examples": n,
        "databases": len({e.db_id for e in examples}),
        "hardness": {level: levels[level] / n for level in hardness.LEVELS},
        "constructs": {tag: count / n for tag, count in sorted(tags.items())},
        "held_out": dict(sorted(held.items())),
        "empty_rate": empty / max(1, n - missing - errors),
        "exec_errors": errors,
        "missing_database": missing,
        "duplicate_questions": n - len({(e.db_id, e.question) for e in examples}),
        "question_words": sum(len(e.question.split()) for e in examples) / n,
        # Scored splits only: train is never scored by test suite.
        "ts_rows_rate": None if split == "train" else _suite_rows_rate(folder, examples),
    }


def describe(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Sizes, hardness mix, construct shares, empty-result rate per split; database sizes."""
    folder = os.fspath(folder)
    schemas = schema_lib.load_tables(os.path.join(folder, "tables.json"))
    splits = {
        s: _split_stats(folder, s, schemas)
        for s in SPLITS
        if os.path.exists(os.path.join(folder, f"{s}.json"))
    }
    return {"databases": _database_stats(folder, schemas), "splits": splits}


def _percent(x: float) -> str:
    return f"{100 * x:5.1f}%"


def format_stats(stats: dict[str, Any], generation_s: float | None = None) -> str:
    """A plain-text report of `describe`'s numbers."""
    db = stats["databases"]
    lines = [
        f"databases: {db['databases']}, {db['tables'][0]}-{db['tables'][1]} tables each, "
        f"{db['rows'][0]}-{db['rows'][1]} rows per table, "
        f"{db['ts_copies'][0]}-{db['ts_copies'][1]} test-suite copies each",
        "",
        f"{'split':<14}{'n':>6}{'dbs':>5}" + "".join(f"{lv:>8}" for lv in hardness.LEVELS)
        + f"{'empty':>8}{'errors':>8}{'no db':>7}{'dup q':>7}{'words':>7}{'ts rows':>9}",
    ]  # fmt: skip
    splits = stats["splits"]
    for name, s in splits.items():
        lines.append(
            f"{name:<14}{s['examples']:>6}{s['databases']:>5}"
            + "".join(f"{_percent(s['hardness'][lv]):>8}" for lv in hardness.LEVELS)
            + f"{_percent(s['empty_rate']):>8}{s['exec_errors']:>8}{s['missing_database']:>7}"
            + f"{s['duplicate_questions']:>7}{s['question_words']:>7.1f}"
            + (
                f"{_percent(s['ts_rows_rate']):>9}"
                if s["ts_rows_rate"] is not None
                else f"{'-':>9}"
            )
        )
    tags = sorted({t for s in splits.values() for t in s["constructs"]})
    lines += ["", "constructs (share of queries using each):"]
    lines.append(f"{'':<16}" + "".join(f"{name:>14}" for name in splits))
    for tag in tags:
        row = "".join(f"{_percent(s['constructs'].get(tag, 0.0)):>14}" for s in splits.values())
        lines.append(f"{tag:<16}{row}")
    lines += ["", "construct pairs held out of the synthetic train split:"]
    for pair in constructs.HELD_OUT:
        key = "+".join(pair)
        lines.append(
            f"{key:<16}" + "".join(f"{s['held_out'].get(key, 0):>14}" for s in splits.values())
        )
    if generation_s is not None:
        lines += ["", f"generation time: {generation_s:.1f} s"]
    return "\n".join(lines)
