"""Database schemas: read from tables.json, or from the sqlite file as a fallback.

A `Schema` keeps Spider's flat column list (index 0 is `*`), because foreign and
primary keys in tables.json refer to columns by that index, and Spider's exact-match
metric canonicalises foreign-key columns through it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from kid.data import jsonio


class SchemaError(jsonio.DataError):
    """A tables.json entry or sqlite schema that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Column:
    table: int  # index into Schema.tables; -1 for `*`
    name: str  # natural name ("home town")
    original: str  # name in the database ("Home_Town")
    type: str  # "text", "number", "time", "boolean", "others"
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    original: str


@dataclasses.dataclass(frozen=True)
class Schema:
    """One database's schema, in Spider's index space."""

    db_id: str
    tables: tuple[Table, ...]
    columns: tuple[Column, ...]
    primary_keys: tuple[int, ...]  # column indices (composite keys flattened)
    foreign_keys: tuple[tuple[int, int], ...]  # (column, referenced column)

    def table_columns(self, table: int) -> list[int]:
        """Column indices of one table, in schema order."""
        return [i for i, c in enumerate(self.columns) if c.table == table]

    def qualified(self, column: int) -> str:
        """`table.column` with original names."""
        c = self.columns[column]
        return "*" if c.table < 0 else f"{self.tables[c.table].original}.{c.original}"

    def lowercase_names(self) -> dict[str, list[str]]:
        """{table: [columns]} in lower case: the namespace Spider's SQL parser resolves in."""
        names = {t.original.lower(): [] for t in self.tables}
        for c in self.columns[1:]:
            names[self.tables[c.table].original.lower()].append(c.original.lower())
        return names


def _field(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise SchemaError(f"{where}: missing field {key!r}")
    return entry[key]


def schema_from_json(entry: Mapping[str, Any], where: str = "tables.json") -> Schema:
    """Builds a Schema from one tables.json entry; `where` names it in errors."""
    db_id = _field(entry, "db_id", where)
    where = f"{where} (db_id={db_id})"
    table_names = _field(entry, "table_names", where)
    table_originals = _field(entry, "table_names_original", where)
    names = _field(entry, "column_names", where)
    originals = _field(entry, "column_names_original", where)
    types = _field(entry, "column_types", where)
    comments = entry.get("column_comments") or [None] * len(originals)
    if not (len(names) == len(originals) == len(types) == len(comments)):
        raise SchemaError(
            f"{where}: column_names, column_names_original, column_types have different lengths"
        )
    if len(table_names) != len(table_originals):
        raise SchemaError(f"{where}: table_names and table_names_original differ in length")
    tables = tuple(Table(n, o) for n, o in zip(table_names, table_originals, strict=False))
    columns = []
    for i, ((t, name), (t_orig, orig), typ, comment) in enumerate(
        zip(names, originals, types, comments, strict=False)
    ):
        if t != t_orig or not -1 <= t < len(tables):
            raise SchemaError(f"{where}: column {i} has table index {t}")
        columns.append(Column(t, name, orig, typ, comment or None))
    primary = []
    for key in entry.get("primary_keys", []):
        primary.extend(key if isinstance(key, list) else [key])
    foreign = []
    for pair in entry.get("foreign_keys", []):
        if len(pair) != 2 or not all(0 <= k < len(columns) for k in pair):
            raise SchemaError(f"{where}: bad foreign key {pair}")
        foreign.append((pair[0], pair[1]))
    for k in primary:
        if not 0 <= k < len(columns):
            raise SchemaError(f"{where}: bad primary key {k}")
    return Schema(db_id, tables, tuple(columns), tuple(primary), tuple(foreign))


def load_tables(path: str | os.PathLike[str]) -> dict[str, Schema]:
    """Reads a tables.json file: {db_id: Schema}."""
    path = os.fspath(path)
    entries = jsonio.read_json_list(path, "database entries")
    schemas = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SchemaError(f"{path}[{i}]: expected an object")
        schema = schema_from_json(entry, f"{path}[{i}]")
        schemas[schema.db_id] = schema
    return schemas


def _natural(name: str) -> str:
    return name.replace("_", " ").lower()


def _spider_type(declared: str) -> str:
    declared = declared.lower()
    if any(t in declared for t in ("int", "real", "floa", "doub", "num", "dec")):
        return "number"
    if any(t in declared for t in ("date", "time", "year")):
        return "time"
    if "bool" in declared or declared == "bit":
        return "boolean"
    if any(t in declared for t in ("char", "text", "clob", "string")) or not declared:
        return "text"
    return "others"


def quote_identifier(name: str) -> str:
    """A quoted sqlite identifier. Not "name": sqlite reads an unknown "name" as a string."""
    return "`" + name.replace("`", "``") + "`"


def db_file(db_dir: str | os.PathLike[str], db_id: str) -> str:
    """The sqlite file of `db_id` in a Spider-format database folder."""
    return os.path.join(db_dir, db_id, f"{db_id}.sqlite")


def existing_db_file(db_dir: str | os.PathLike[str] | None, db_id: str) -> str | None:
    """`db_file(db_dir, db_id)`, or None when there is no folder or no such file."""
    if db_dir is None:
        return None
    path = db_file(db_dir, db_id)
    return path if os.path.exists(path) else None


def connect_read_only(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that cannot write: sqlite URI mode=ro on the absolute file path (escaped,
    so a '#' or '?' in a folder name cannot cut the mode off)."""
    uri = pathlib.Path(db_path).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def schema_from_sqlite(db_path: str | os.PathLike[str], db_id: str | None = None) -> Schema:
    """Reads a schema from a sqlite file (read-only), for databases missing in tables.json."""
    db_path = os.fspath(db_path)
    if not os.path.exists(db_path):
        raise SchemaError(f"{db_path}: database file not found")
    db_id = db_id or os.path.splitext(os.path.basename(db_path))[0]
    try:
        conn = connect_read_only(db_path)
    except sqlite3.DatabaseError as e:
        raise SchemaError(f"{db_path}: cannot open database: {e}") from e
    try:
        table_names = [
            r[0]
            for r in conn.execute(
                # All tables, sqlite_sequence included, as Spider's own schema reader does.
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid"
            )
        ]
        tables, columns, primary = [], [Column(-1, "*", "*", "text")], []
        fk_names = []
        for t, table in enumerate(table_names):
            tables.append(Table(_natural(table), table))
            for _, name, declared, _, _, pk in conn.execute(
                f"PRAGMA table_info({quote_identifier(table)})"
            ):
                if pk:
                    primary.append(len(columns))
                columns.append(Column(t, _natural(name), name, _spider_type(declared or "")))
            for row in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(table)})"):
                fk_names.append((table, row[3], row[2], row[4]))
    except sqlite3.DatabaseError as e:
        raise SchemaError(f"{db_path}: cannot read schema: {e}") from e
    finally:
        conn.close()
    index = {
        (tables[c.table].original.lower(), c.original.lower()): i
        for i, c in enumerate(columns)
        if c.table >= 0
    }
    foreign = []
    for table, col, ref_table, ref_col in fk_names:
        if ref_col is None:  # FOREIGN KEY (x) REFERENCES t: the referenced primary key
            ref_pk = [
                i for i in primary if tables[columns[i].table].original.lower() == ref_table.lower()
            ]
            ref = ref_pk[0] if ref_pk else None
        else:
            ref = index.get((ref_table.lower(), ref_col.lower()))
        src = index.get((table.lower(), col.lower()))
        if src is not None and ref is not None:
            foreign.append((src, ref))
    return Schema(db_id, tuple(tables), tuple(columns), tuple(primary), tuple(foreign))


def schemas_for(
    db_ids: Iterable[str], tables: Mapping[str, Schema], db_dir: str | None
) -> dict[str, Schema]:
    """Schemas for `db_ids`: from tables.json, else read from `db_dir/<id>/<id>.sqlite`."""
    out = {}
    for db_id in db_ids:
        if db_id in tables:
            out[db_id] = tables[db_id]
        elif db_dir is not None:
            out[db_id] = schema_from_sqlite(db_file(db_dir, db_id), db_id)
    return out
