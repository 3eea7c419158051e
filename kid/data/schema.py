"""Database schemas: read from tables.json, or from the sqlite file as a fallback.

A `Schema` keeps Spider's flat column list (index 0 is `*`), because foreign and
primary keys in tables.json refer to columns by that index, and Spider's exact-match
metric canonicalises foreign-key columns through it.

tables.json is validated field by field and read as the official evaluator reads it
(the original names win, see `_build`): `read_tables` refuses bad entries one by one, so
a bad entry costs only its database; `load_tables` is the strict variant. Database paths
are built only here (`db_file`), from plain db_ids, and only regular files are opened.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import sqlite3
import stat
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


class InvalidDbId(jsonio.DataError):
    """A db_id that is not a plain name, so it cannot name a database folder safely.

    Raised by `db_file` / `existing_db_file`, the one place database paths are built: an
    absolute or `../` db_id would otherwise reach files outside the database folder.
    """

    def __init__(self, db_id: object):
        super().__init__(f"invalid db_id {db_id!r}: must be a plain name (one path component)")
        self.db_id = db_id


def is_plain_db_id(db_id: object) -> bool:
    """A non-empty string naming one path component: no separator, NUL, `.` or `..`."""
    return (
        isinstance(db_id, str)
        and db_id not in ("", ".", "..")
        # "\\" too: a path separator on Windows, and never part of a Spider or BIRD db_id.
        and not any(sep in db_id for sep in ("/", "\\", "\0"))
    )


@dataclasses.dataclass(frozen=True)
class TablesProblem:
    """One tables.json entry that was refused (skipped) or read with a documented repair."""

    source: str  # the tables file
    index: int  # the entry's position in it
    db_id: str | None  # None when the entry has no usable db_id
    message: str  # names the field
    refused: bool  # True: the entry gives no schema; False: read, see message

    def __str__(self) -> str:
        return f"{self.source}[{self.index}] (db_id={self.db_id}): {self.message}"


@dataclasses.dataclass(frozen=True)
class Tables:
    """A tables.json file: the schemas it gives and what was wrong with it."""

    schemas: dict[str, Schema]
    problems: tuple[TablesProblem, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(entry: Mapping[str, Any], key: str, default: list | None = None) -> list:
    if key not in entry and default is not None:
        return default
    if key not in entry:
        raise SchemaError(f"missing field {key!r}")
    value = entry[key]
    if not isinstance(value, list):
        raise SchemaError(f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def _strings(entry: Mapping[str, Any], key: str) -> list[str]:
    values = _list(entry, key)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise SchemaError(f"field {key!r}[{i}] must be a string, got {type(v).__name__}")
    return values


def _columns(entry: Mapping[str, Any], key: str, num_tables: int) -> list[tuple[int, str]]:
    """[table index, name] pairs; only column 0 (`*`) has table -1."""
    values = _list(entry, key)
    if not values:
        raise SchemaError(f"field {key!r} is empty (column 0 must be [-1, '*'])")
    for i, v in enumerate(values):
        if not (isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and isinstance(v[1], str)):
            raise SchemaError(f"field {key!r}[{i}] must be [table index, name], got {v!r:.80}")
        in_range = v[0] == -1 if i == 0 else 0 <= v[0] < num_tables
        if not in_range:
            raise SchemaError(f"field {key!r}[{i}] has table index {v[0]}")
    return [(t, name) for t, name in values]


def _key_columns(keys: Iterable[Any], field: str, num_columns: int) -> list[int]:
    """Column indices of keys: ints in [1, num_columns), never 0 (`*`), bool or float."""
    for k in keys:
        if not _is_int(k) or not 0 < k < num_columns:
            raise SchemaError(
                f"field {field!r} holds {k!r}: not a column index in 1..{num_columns - 1}"
            )
    return list(keys)


def _primary_keys(entry: Mapping[str, Any], num_columns: int) -> list[int]:
    """Flattened primary keys; an item may be a list (a composite key)."""
    out = []
    for key in _list(entry, "primary_keys", []):
        out += _key_columns(key if isinstance(key, list) else [key], "primary_keys", num_columns)
    return out


def _foreign_keys(entry: Mapping[str, Any], num_columns: int) -> list[tuple[int, int]]:
    out = []
    for pair in _list(entry, "foreign_keys", []):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise SchemaError(
                f"field 'foreign_keys' holds {pair!r:.80}: not a [column, column] pair"
            )
        a, b = _key_columns(pair, "foreign_keys", num_columns)
        out.append((a, b))
    return out


def _comments(entry: Mapping[str, Any], num_columns: int) -> list[str | None]:
    comments = _list(entry, "column_comments", [None] * num_columns)
    if len(comments) != num_columns:
        raise SchemaError("field 'column_comments' differs in length from 'column_names_original'")
    for i, c in enumerate(comments):
        if c is not None and not isinstance(c, str):
            raise SchemaError(f"field 'column_comments'[{i}] must be a string or null")
    return [c or None for c in comments]


def _natural_names(
    entry: Mapping[str, Any], tables: list[str], columns: list[tuple[int, str]]
) -> tuple[list[str], list[str], list[str]]:
    """(table names, column names, notes): natural names aligned with the originals.

    Pre-2020 Spider `formula_1` / `scholar` entries (still in Spider-DK's and the
    test-suite evaluator's tables.json) list natural names in another table order, so
    position i of `column_names` is not column i. The originals define the index space
    (as in the official evaluator); misaligned natural names are derived from them.
    """
    table_names = _strings(entry, "table_names")
    names = _columns(entry, "column_names", len(table_names))
    if len(table_names) == len(tables) and [t for t, _ in names] == [t for t, _ in columns]:
        return table_names, [n for _, n in names], []
    note = (
        "'column_names' / 'table_names' do not line up with the originals: "
        "natural names derived from the originals"
    )
    return [natural_name(t) for t in tables], [natural_name(c) for _, c in columns], [note]


def _build(entry: Any) -> tuple[Schema, list[str]]:
    """(Schema, repair notes) from one tables.json entry; SchemaError names the field.

    What wins: `table_names_original` / `column_names_original` give the tables, the
    table of each column and the index space of keys and exact match, as in the official
    evaluator; `column_types` and `column_comments` are positional with them; the
    natural lists only give display names (see `_natural_names`).
    """
    if not isinstance(entry, dict):
        raise SchemaError(f"expected an object, got {type(entry).__name__}")
    db_id = entry.get("db_id")
    if not is_plain_db_id(db_id):
        raise SchemaError(f"field 'db_id' must be a plain name (one path component), got {db_id!r}")
    tables = _strings(entry, "table_names_original")
    columns = _columns(entry, "column_names_original", len(tables))
    types = _strings(entry, "column_types")
    if len(types) != len(columns):
        raise SchemaError("field 'column_types' differs in length from 'column_names_original'")
    comments = _comments(entry, len(columns))
    primary = _primary_keys(entry, len(columns))
    foreign = _foreign_keys(entry, len(columns))
    table_names, column_names, notes = _natural_names(entry, tables, columns)
    schema = Schema(
        db_id,
        tuple(Table(n, o) for n, o in zip(table_names, tables, strict=True)),
        tuple(
            Column(t, name, orig, typ, comment)
            for (t, orig), name, typ, comment in zip(
                columns, column_names, types, comments, strict=True
            )
        ),
        tuple(primary),
        tuple(foreign),
    )
    return schema, notes


def _db_id_of(entry: Any) -> str | None:
    db_id = entry.get("db_id") if isinstance(entry, dict) else None
    return db_id if isinstance(db_id, str) else None


def schema_from_json(entry: Any, where: str = "tables.json") -> Schema:
    """Builds a Schema from one tables.json entry; `where` names it in errors."""
    try:
        return _build(entry)[0]
    except SchemaError as e:
        raise SchemaError(f"{where} (db_id={_db_id_of(entry)}): {e}") from None


def _deduplicated(
    path: str, found: dict[str, list[tuple[int, Schema]]]
) -> tuple[dict[str, Schema], list[TablesProblem]]:
    """One schema per db_id. Identical repeats are kept once; differing ones are all
    refused, since which one is meant cannot be told (the official evaluator keeps the last)."""
    schemas, problems = {}, []
    for db_id, entries in found.items():
        first_index, first = entries[0]
        conflict = any(s != first for _, s in entries[1:])
        for i, _ in entries[1:]:
            what = "differs from" if conflict else "repeats"
            action = "every entry of this db_id refused" if conflict else "kept once"
            problems.append(
                TablesProblem(
                    path,
                    i,
                    db_id,
                    f"duplicate db_id: {what} entry [{first_index}]: {action}",
                    conflict,
                )
            )
        if not conflict:
            schemas[db_id] = first
    return schemas, problems


def read_tables(path: str | os.PathLike[str]) -> Tables:
    """Reads a tables.json file, refusing bad entries one by one.

    A bad entry (wrong type, bad index, invalid db_id, conflicting duplicate) costs only
    its database: it is reported as a refused `TablesProblem` naming file, db_id and
    field, and gives no schema (callers fall back to the sqlite file). A file that is
    not a json list is refused as a whole (DataError).
    """
    path = os.fspath(path)
    found: dict[str, list[tuple[int, Schema]]] = {}
    problems = []
    for i, entry in enumerate(jsonio.read_json_list(path, "database entries")):
        try:
            schema, notes = _build(entry)
        except SchemaError as e:
            problems.append(TablesProblem(path, i, _db_id_of(entry), str(e), refused=True))
            continue
        problems += [TablesProblem(path, i, schema.db_id, n, refused=False) for n in notes]
        found.setdefault(schema.db_id, []).append((i, schema))
    schemas, duplicates = _deduplicated(path, found)
    problems = sorted(problems + duplicates, key=lambda p: p.index)
    return Tables(schemas, tuple(problems))


def load_tables(path: str | os.PathLike[str]) -> dict[str, Schema]:
    """Reads a tables.json file: {db_id: Schema}; SchemaError on the first refused entry.

    Strict: for a file that must be whole. `read_tables` skips bad entries instead.
    """
    tables = read_tables(path)
    refused = [p for p in tables.problems if p.refused]
    if refused:
        more = f" (and {len(refused) - 1} more refused entries)" if len(refused) > 1 else ""
        raise SchemaError(f"{refused[0]}{more}")
    return tables.schemas


def natural_name(identifier: str) -> str:
    """The readable name of an identifier, as tables.json spells it when no person wrote
    one: "album_title", "AlbumTitle", "TAlbum" -> "album title", "album title", "t album"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|_+", " ", identifier)
    return " ".join(spaced.lower().split())


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


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (symlinks followed); False for FIFOs, devices, folders, absent."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return False


def db_file(db_dir: str | os.PathLike[str], db_id: str) -> str:
    """The sqlite file of `db_id` in a Spider-format database folder.

    Raises InvalidDbId unless `db_id` is a plain name, so no path built here leaves
    `db_dir`.
    """
    if not is_plain_db_id(db_id):
        raise InvalidDbId(db_id)
    return os.path.join(db_dir, db_id, f"{db_id}.sqlite")


def existing_db_file(db_dir: str | os.PathLike[str] | None, db_id: str) -> str | None:
    """`db_file(db_dir, db_id)` if it is a regular file; None when there is no folder, no
    such file, or something else there (a FIFO or device would block or never end).
    Raises InvalidDbId like `db_file`, even without a folder: a bad db_id is not a
    missing database."""
    if not is_plain_db_id(db_id):
        raise InvalidDbId(db_id)
    if db_dir is None:
        return None
    path = db_file(db_dir, db_id)
    return path if is_regular_file(path) else None


def _all_committed_in_file(path: str) -> bool:
    """True when every committed page is in the main file (no hot journal, no WAL content):
    then sqlite may open it immutable, creating no -shm / -wal side files. The sandboxed
    executor worker, a standard-library script that cannot import kid, checks the same."""
    if os.path.exists(path + "-journal"):
        return False
    try:
        if os.stat(path + "-wal").st_size > 0:
            return False
    except FileNotFoundError:
        pass
    with open(path, "rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[18] in (1, 2) and header[19] in (1, 2)


def connect_read_only(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that cannot write: sqlite URI mode=ro on the absolute file path (escaped,
    so a '#' or '?' in a folder name cannot cut the mode off), immutable when every
    committed page is in the file, so a WAL-mode database gets no side files.

    Only a regular file is opened (sqlite3.OperationalError otherwise, as sqlite raises for
    a file it cannot open): opening a FIFO blocks until a writer appears.
    """
    if not is_regular_file(db_path):
        raise sqlite3.OperationalError(f"{os.fspath(db_path)}: not a regular file")
    path = pathlib.Path(db_path).resolve()
    uri = path.as_uri() + "?mode=ro"
    if _all_committed_in_file(str(path)):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True)


def schema_from_sqlite(db_path: str | os.PathLike[str], db_id: str | None = None) -> Schema:
    """Reads a schema from a sqlite file (read-only), for databases missing in tables.json."""
    db_path = os.fspath(db_path)
    if not is_regular_file(db_path):
        raise SchemaError(f"{db_path}: database file not found (or not a regular file)")
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
            tables.append(Table(natural_name(table), table))
            for _, name, declared, _, _, pk in conn.execute(
                f"PRAGMA table_info({quote_identifier(table)})"
            ):
                if pk:
                    primary.append(len(columns))
                columns.append(Column(t, natural_name(name), name, _spider_type(declared or "")))
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
