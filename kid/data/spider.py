"""Readers for Spider-format text-to-SQL data (CONTRACT 1).

One reader covers Spider, Spider-DK, Spider-Realistic (`question`, `query`), Spider-Syn
(question under `SpiderSynQuestion`) and BIRD (`SQL`, `evidence`, `<split>_tables.json`,
`<split>_databases/`). Bad records, refused tables.json entries and missing or
unreadable databases never crash a run: they are collected as `Problem`s naming the
file and record index, and the caller decides.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from kid.data import jsonio
from kid.data import schema as schema_lib

DataError = jsonio.DataError


@dataclasses.dataclass(frozen=True)
class Example:
    db_id: str
    question: str
    query: str
    evidence: str = ""  # BIRD's external knowledge; empty elsewhere
    source: str = ""  # file the record came from
    index: int = -1  # position of the record in that file


@dataclasses.dataclass(frozen=True)
class Problem:
    """What kept a record, tables.json entry or example from being used in full.

    kind: "malformed" (a record skipped), "schema" (a tables.json entry refused; source and
    index name the entry), "missing_database" (an example whose sqlite file is absent or
    not a regular file), "unreadable_database" (an example whose database has no
    tables.json entry and a file whose schema cannot be read).
    """

    source: str
    index: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}[{self.index}]: {self.kind}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Examples of one split with the schemas and database folder they refer to."""

    examples: tuple[Example, ...]
    schemas: dict[str, schema_lib.Schema]
    db_dir: str | None
    problems: tuple[Problem, ...]

    def db_path(self, db_id: str) -> str | None:
        """The sqlite file of `db_id`, or None when it does not exist."""
        return schema_lib.existing_db_file(self.db_dir, db_id)

    @property
    def missing_databases(self) -> dict[str, int]:
        """{db_id: number of examples} for databases whose sqlite file is absent."""
        counts = collections.Counter(
            p.message.split()[0] for p in self.problems if p.kind == "missing_database"
        )
        return dict(counts)

    def summary(self) -> str:
        kinds = collections.Counter(p.kind for p in self.problems)
        text = f"{len(self.examples)} examples, {len(self.schemas)} schemas"
        if kinds["malformed"]:
            text += f", {kinds['malformed']} malformed records skipped"
        if kinds["schema"]:
            text += f", {kinds['schema']} tables.json entries refused"
        if kinds["unreadable_database"]:
            text += f", {kinds['unreadable_database']} examples on unreadable databases"
        for db_id, n in sorted(self.missing_databases.items()):
            text += f", {n} examples on missing database {db_id}"
        return text


_QUESTION_KEYS = ("SpiderSynQuestion", "question")
_QUERY_KEYS = ("query", "SQL")


def _first(record: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def parse_record(record: Any, source: str, index: int) -> Example:
    """One json record -> Example; raises DataError naming `source[index]` and the field."""
    where = f"{source}[{index}]"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    fields = {
        "db_id": record.get("db_id"),
        "question": _first(record, _QUESTION_KEYS),
        "query": _first(record, _QUERY_KEYS),
    }
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field {name!r} is missing or not a non-empty string")
    if not schema_lib.is_plain_db_id(fields["db_id"]):
        raise DataError(f"{where}: field 'db_id' is not a plain name: {fields['db_id']!r}")
    # Absent or null evidence is none. Any other non-string (`"evidence": 0`) is an error,
    # not "": a record whose evidence was lost must not pass as one without evidence.
    evidence = record.get("evidence")
    if evidence is None:
        evidence = ""
    if not isinstance(evidence, str):
        raise DataError(f"{where}: field 'evidence' is not a string: {evidence!r:.40}")
    return Example(
        db_id=fields["db_id"],
        question=fields["question"].strip(),
        query=fields["query"].strip(),
        evidence=evidence.strip(),
        source=source,
        index=index,
    )


def read_examples(
    path: str | os.PathLike[str], *, strict: bool = False
) -> tuple[list[Example], list[Problem]]:
    """Reads a Spider-format json file: (examples, malformed-record problems)."""
    path = os.fspath(path)
    records = jsonio.read_json_list(path, "examples")
    examples, problems = [], []
    for i, record in enumerate(records):
        try:
            examples.append(parse_record(record, path, i))
        except DataError as e:
            if strict:
                raise
            problems.append(Problem(path, i, "malformed", str(e).split(": ", 1)[1]))
    return examples, problems


def layout_for(split_file: str | os.PathLike[str]) -> tuple[str, str]:
    """(tables.json, database folder) beside a split file, for Spider and BIRD layouts.

    BIRD ships `dev.json` next to `dev_tables.json` and `dev_databases/`, Spider's test
    release `test.json` next to `test_tables.json` and `test_database/`; Spider's other
    splits and its variants use `tables.json` and `database/`.
    """
    split_file = os.fspath(split_file)
    folder = os.path.dirname(split_file) or "."
    split = os.path.splitext(os.path.basename(split_file))[0]
    split_tables = os.path.join(folder, f"{split}_tables.json")
    if os.path.exists(split_tables):
        spider_test = os.path.join(folder, f"{split}_database")
        bird = os.path.join(folder, f"{split}_databases")
        return split_tables, spider_test if os.path.isdir(spider_test) else bird
    return os.path.join(folder, "tables.json"), os.path.join(folder, "database")


def load_dataset(
    split_file: str | os.PathLike[str],
    *,
    tables_file: str | os.PathLike[str] | None = None,
    db_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> Dataset:
    """Loads a split with its schemas; missing databases are reported, never fatal.

    Args:
      split_file: a Spider-format json file (train_spider.json, dev.json, BIRD dev.json).
      tables_file: tables.json; default: found beside split_file (see `layout_for`).
      db_dir: folder of <db_id>/<db_id>.sqlite; default: found beside split_file.
      strict: raise on the first malformed record instead of skipping and reporting it.
    """
    split_file = os.fspath(split_file)
    default_tables, default_db_dir = layout_for(split_file)
    tables_file = os.fspath(tables_file or default_tables)
    db_dir = os.fspath(db_dir or default_db_dir)
    examples, problems = read_examples(split_file, strict=strict)
    return assemble(examples, problems, tables_file, db_dir)


def _database(
    db_id: str, tables: schema_lib.Tables, db_dir: str
) -> tuple[schema_lib.Schema | None, str | None, str]:
    """(schema or None, problem kind or None, reason) for one db_id of a split."""
    try:
        path = schema_lib.existing_db_file(db_dir, db_id)
    except schema_lib.InvalidDbId as e:  # only Examples built by hand get here
        return None, "malformed", str(e)
    schema = tables.schemas.get(db_id)
    if path is None:
        missing = schema_lib.db_file(db_dir, db_id)
        return schema, "missing_database", f"{missing} not found or not a regular file"
    if schema is not None:
        return schema, None, ""
    try:
        return schema_lib.schema_from_sqlite(path, db_id), None, ""
    except schema_lib.SchemaError as e:
        return None, "unreadable_database", str(e)


def _tables(tables_file: str) -> schema_lib.Tables:
    if not os.path.exists(tables_file):
        return schema_lib.Tables({}, ())
    return schema_lib.read_tables(tables_file)


def assemble(
    examples: Sequence[Example],
    problems: Sequence[Problem],
    tables_file: str | os.PathLike[str],
    db_dir: str | os.PathLike[str],
) -> Dataset:
    """A Dataset of read examples and their schemas (from tables_file, else the sqlite file).

    Problems added: each refused tables.json entry ("schema"), and each example whose
    sqlite file is absent ("missing_database"; its schema still comes from tables.json if
    there) or, without a tables.json entry, unreadable ("unreadable_database").
    """
    tables_file, db_dir = os.fspath(tables_file), os.fspath(db_dir)
    tables = _tables(tables_file)
    problems = list(problems) + [
        Problem(p.source, p.index, "schema", f"db_id {p.db_id}: {p.message}")
        for p in tables.problems
        if p.refused
    ]
    found = {d: _database(d, tables, db_dir) for d in sorted({e.db_id for e in examples})}
    for e in examples:
        _, kind, reason = found[e.db_id]
        if kind is not None:
            problems.append(Problem(e.source, e.index, kind, f"{e.db_id} ({reason})"))
    schemas = {d: schema for d, (schema, _, _) in found.items() if schema is not None}
    return Dataset(
        tuple(examples), schemas, db_dir if os.path.isdir(db_dir) else None, tuple(problems)
    )
