"""Checks a Spider-format dataset folder: `python -m kid.data.check DIR`.

Reads what a run would read (every split file, tables.json, each database's schema) and
prints a summary: examples per split, malformed records, missing databases, refused
tables.json entries per db_id, and databases that cannot be read or lack tables that
tables.json names. Only schemas are read from the sqlite files (no values, no full
integrity check), so a check of Spider takes seconds.

Exit status: 0 when the folder is usable (at least one split with examples; the problems
found are printed), 1 when it is not a dataset (not a folder, or no split with examples).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
from collections.abc import Sequence

from kid.data import jsonio, spider
from kid.data import schema as schema_lib

LISTED = 10  # problems listed per kind; the rest are counted


@dataclasses.dataclass(frozen=True)
class Split:
    """One split file: its examples by db_id and its malformed records."""

    path: str
    db_ids: collections.Counter  # db_id -> examples
    malformed: tuple[spider.Problem, ...]
    error: str | None = None  # why the file is not a split (then nothing else is set)

    @property
    def examples(self) -> int:
        return sum(self.db_ids.values())


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tables file and a database folder, shared by the splits that use them."""

    tables_file: str
    db_dir: str
    schemas: dict[str, schema_lib.Schema]
    tables_problems: tuple[schema_lib.TablesProblem, ...]
    tables_error: str | None  # the whole file refused (or absent)
    databases: dict[str, str | None]  # db_id -> None when readable, else what is wrong


@dataclasses.dataclass(frozen=True)
class Report:
    folder: str
    splits: tuple[Split, ...]
    layouts: dict[tuple[str, str], Layout]
    error: str | None = None  # why the folder is not a dataset

    @property
    def usable(self) -> bool:
        return self.error is None and any(s.examples for s in self.splits)

    @property
    def problems(self) -> int:
        """Malformed records, skipped split files, tables.json problems, bad databases."""
        splits = sum(len(s.malformed) + (s.error is not None) for s in self.splits)
        layouts = sum(
            len(x.tables_problems)
            + (x.tables_error is not None)
            + sum(map(bool, x.databases.values()))
            for x in self.layouts.values()
        )
        return splits + layouts


def split_files(folder: str) -> list[str]:
    """The *.json files of a folder other than tables files, in name order."""
    names = sorted(os.listdir(folder))
    return [
        os.path.join(folder, n)
        for n in names
        if n.endswith(".json") and n != "tables.json" and not n.endswith("_tables.json")
    ]


def read_split(path: str) -> Split:
    """A split's examples and malformed records; `error` when it is no list of records."""
    try:
        examples, problems = spider.read_examples(path)
    except (OSError, jsonio.DataError) as e:
        return Split(path, collections.Counter(), (), error=str(e))
    return Split(path, collections.Counter(e.db_id for e in examples), tuple(problems))


def _missing_names(expected: schema_lib.Schema, found: schema_lib.Schema) -> list[str]:
    """Tables and columns of tables.json the sqlite file lacks (case-insensitive)."""
    have = {t: set(columns) for t, columns in found.lowercase_names().items()}
    missing = []
    for table, columns in expected.lowercase_names().items():
        if table not in have:
            missing.append(table)
        else:
            missing += [f"{table}.{c}" for c in columns if c not in have[table]]
    return missing


def check_database(db_dir: str, db_id: str, expected: schema_lib.Schema | None) -> str | None:
    """None when the database reads (and has what tables.json names), else what is wrong."""
    path = schema_lib.db_file(db_dir, db_id)
    if not os.path.lexists(path):
        return f"missing ({path})"
    if not schema_lib.is_regular_file(path):
        return f"not a regular file ({path})"
    try:
        found = schema_lib.schema_from_sqlite(path, db_id)
    except schema_lib.SchemaError as e:
        return f"unreadable: {e}"
    missing = _missing_names(expected, found) if expected is not None else []
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"lacks what tables.json names: {', '.join(missing[:3])}{more}"
    return None


def _database_ids(db_dir: str, schemas: dict[str, schema_lib.Schema], used: set[str]) -> set[str]:
    """db_ids to check: used by a split, in tables.json, or a folder of db_dir."""
    folders = set()
    if os.path.isdir(db_dir):
        folders = {n for n in os.listdir(db_dir) if os.path.isdir(os.path.join(db_dir, n))}
    return {d for d in used | set(schemas) | folders if schema_lib.is_plain_db_id(d)}


def check_layout(tables_file: str, db_dir: str, used: set[str]) -> Layout:
    """Reads a tables file (entry by entry) and the schema of every database."""
    schemas, problems, error = {}, (), None
    if not os.path.exists(tables_file):
        error = f"{tables_file}: not found (schemas are read from the sqlite files)"
    else:
        try:
            tables = schema_lib.read_tables(tables_file)
            schemas, problems = tables.schemas, tables.problems
        except (OSError, jsonio.DataError) as e:
            error = str(e)
    databases = {
        d: check_database(db_dir, d, schemas.get(d))
        for d in sorted(_database_ids(db_dir, schemas, used))
    }
    return Layout(tables_file, db_dir, schemas, problems, error, databases)


def check(folder: str | os.PathLike[str]) -> Report:
    """Checks a dataset folder; see the module docstring."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return Report(folder, (), {}, error=f"{folder}: not a folder")
    splits = tuple(read_split(p) for p in split_files(folder))
    used: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for s in splits:
        if s.examples:
            used[spider.layout_for(s.path)] |= set(s.db_ids)
    layouts = {key: check_layout(*key, db_ids) for key, db_ids in used.items()}
    error = None if any(s.examples for s in splits) else f"{folder}: no split file with examples"
    return Report(folder, splits, layouts, error)


def _listed(lines: Sequence[str], indent: str = "    ") -> list[str]:
    out = [indent + line for line in lines[:LISTED]]
    if len(lines) > LISTED:
        out.append(f"{indent}... and {len(lines) - LISTED} more")
    return out


def _split_lines(split: Split, layout: Layout | None) -> list[str]:
    name = os.path.basename(split.path)
    if split.error is not None:
        return [f"  {name}: skipped: {split.error}"]
    lines = [f"  {name}: {split.examples} examples on {len(split.db_ids)} databases"]
    if split.malformed:
        lines.append(f"    {len(split.malformed)} malformed records (skipped):")
        lines += _listed([str(p) for p in split.malformed], "      ")
    if layout is not None:
        bad = {d: layout.databases[d] for d in sorted(split.db_ids) if layout.databases.get(d)}
        for d, why in bad.items():
            lines.append(f"    {split.db_ids[d]} examples on database {d}: {why}")
        no_schema = [d for d in sorted(split.db_ids) if d not in layout.schemas and bad.get(d)]
        if no_schema:
            lines.append(f"    no schema (neither tables.json nor a readable file): {no_schema}")
    return lines


def _layout_lines(layout: Layout) -> list[str]:
    lines = [f"schemas: {layout.tables_file}, databases: {layout.db_dir}"]
    if layout.tables_error:
        lines.append(f"  tables file: {layout.tables_error}")
    else:
        refused = [p for p in layout.tables_problems if p.refused]
        lines.append(
            f"  tables file: {len(layout.schemas)} schemas, {len(refused)} entries refused"
        )
        lines += _listed([str(p) for p in layout.tables_problems])
    bad = [f"{d}: {why}" for d, why in layout.databases.items() if why]
    readable = len(layout.databases) - len(bad)
    lines.append(f"  databases: {readable} readable, {len(bad)} with problems")
    lines += _listed(bad)
    return lines


def format_report(report: Report) -> str:
    """The printed summary."""
    if not report.splits:
        return f"not a dataset: {report.error}"
    lines = [f"dataset folder: {report.folder}", "splits:"]
    for s in report.splits:
        layout = report.layouts.get(spider.layout_for(s.path)) if s.examples else None
        lines += _split_lines(s, layout)
    for layout in report.layouts.values():
        lines += _layout_lines(layout)
    if report.usable:
        examples = sum(s.examples for s in report.splits)
        lines.append(f"usable: {examples} examples, {report.problems} problems (listed above)")
    else:
        lines.append(f"not a dataset: {report.error}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kid.data.check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("folder", help="a Spider-format folder (split *.json, tables.json, database/)")
    args = p.parse_args(argv)
    report = check(args.folder)
    print(format_report(report))
    return 0 if report.usable else 1


if __name__ == "__main__":
    sys.exit(main())
