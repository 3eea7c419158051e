"""Fills a domain's tables with random rows and writes them as a sqlite file.

Row counts, foreign keys and values come from one `random.Random`, so a seed fixes the
whole database. The file is built in memory and copied out with `VACUUM INTO`, which
lays pages out the same way every time: same seed, byte-identical file. Each foreign
key only references a random subset of its parent's rows, so "parents without
children" (NOT IN questions) exist.
"""

from __future__ import annotations

import os
import random
import sqlite3
from typing import Any

from kid.data import schema as schema_lib
from kid.synth.domains import Domain, TableSpec

Rows = dict[str, list[tuple[Any, ...]]]
_MAX_TRIES = 1000
_REFERENCED = (0.7, 0.95)  # share of a parent's rows that a foreign key may point to


def _unique_values(rng: random.Random, table: TableSpec, column, n: int) -> list[Any]:
    seen: dict[Any, None] = {}
    for _ in range(_MAX_TRIES * n):
        if len(seen) == n:
            return list(seen)
        seen.setdefault(column.generate(rng))
    raise ValueError(f"{table.name}.{column.name}: cannot draw {n} distinct values")


def _referenced_ids(rng: random.Random, n_parent: int) -> list[int]:
    share = rng.uniform(*_REFERENCED)
    ids = rng.sample(range(1, n_parent + 1), max(1, round(share * n_parent)))
    return sorted(ids)


def _key_pairs(rng: random.Random, a: list[int], b: list[int], n: int) -> list[tuple[int, int]]:
    """`n` distinct (a, b) pairs in a random order, for a composite primary key."""
    n = min(n, len(a) * len(b) // 2)
    flat = rng.sample(range(len(a) * len(b)), n)
    return [(a[i // len(b)], b[i % len(b)]) for i in flat]


def _table_rows(rng: random.Random, table: TableSpec, counts: dict[str, int]) -> list[tuple]:
    n = rng.randint(*table.rows)
    fks = {c.name: _referenced_ids(rng, counts[c.references]) for c in table.foreign_keys}
    if table.is_bridge:  # distinct pairs of its two keys
        first, second = table.primary_key
        pairs = _key_pairs(rng, fks[first], fks[second], n)
        n = len(pairs)
        keys = {first: [p[0] for p in pairs], second: [p[1] for p in pairs]}
    else:
        keys = {c: [rng.choice(ids) for _ in range(n)] for c, ids in fks.items()}
    columns = []
    for c in table.columns:
        if c.role == "key":
            columns.append(list(range(1, n + 1)))
        elif c.role == "fk":
            columns.append(keys[c.name])
        elif c.unique:
            columns.append(_unique_values(rng, table, c, n))
        else:
            columns.append([c.generate(rng) for _ in range(n)])
    return list(zip(*columns, strict=True))


def populate(domain: Domain, rng: random.Random) -> Rows:
    """{table: rows}, tables in schema order (parents before children)."""
    rows: Rows = {}
    for table in domain.all_tables:
        rows[table.name] = _table_rows(rng, table, {t: len(r) for t, r in rows.items()})
    return rows


def create_statement(table: TableSpec) -> str:
    parts = []
    for c in table.columns:
        inline_key = table.primary_key == (c.name,)
        parts.append(f"{c.name} {c.sql_type}{' PRIMARY KEY' if inline_key else ''}")
    if len(table.primary_key) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    for c in table.foreign_keys:
        parts.append(f"FOREIGN KEY ({c.name}) REFERENCES {c.references} ({c.referenced_key})")
    return f"CREATE TABLE {table.name} ({', '.join(parts)})"


def connect(domain: Domain, rows: Rows) -> sqlite3.Connection:
    """An in-memory database holding `rows`; generation queries it, never a file."""
    conn = sqlite3.connect(":memory:")
    for table in domain.all_tables:
        conn.execute(create_statement(table))
        marks = ", ".join("?" * len(table.columns))
        conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows[table.name])
    conn.commit()
    return conn


def write(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    """Copies an in-memory database to a new file, deterministically laid out."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"{path}: refusing to overwrite a database")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    conn.execute("VACUUM INTO ?", (path,))


def tables_entry(domain: Domain) -> dict[str, Any]:
    """The domain's schema as one Spider tables.json record."""
    names, originals, types = [[-1, "*"]], [[-1, "*"]], ["text"]
    index: dict[tuple[str, str], int] = {}
    primary, foreign = [], []
    for t, table in enumerate(domain.all_tables):
        for c in table.columns:
            index[table.name, c.name] = len(names)
            names.append([t, schema_lib.natural_name(c.name)])
            originals.append([t, c.name])
            types.append("text" if c.type == "text" else "number")
            if c.name in table.primary_key:
                primary.append(index[table.name, c.name])
    for table in domain.all_tables:
        for c in table.foreign_keys:
            foreign.append([index[table.name, c.name], index[c.references, c.referenced_key]])
    return {
        "column_names": names,
        "column_names_original": originals,
        "column_types": types,
        "db_id": domain.db_id,
        "foreign_keys": foreign,
        "primary_keys": primary,
        "table_names": [schema_lib.natural_name(t.name) for t in domain.all_tables],
        "table_names_original": [t.name for t in domain.all_tables],
    }
