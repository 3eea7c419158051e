"""Database values for prompts: sample values per column and question-to-value matching.

CodeS-style prompts show a few sample values per column and the database values a
question mentions ("matched values"); T5 prompts show the latter. Both come from one
read of each database, cached per db_id: the sqlite file is opened read-only
(`mode=ro`), every distinct short text value is put into a word n-gram index, and a
question is matched by hash lookups of its own n-grams, never by a scan per question.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
from collections.abc import Iterator

from kid.data import schema as schema_lib

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def _stem(word: str) -> str:
    """Drops a plural `s` ("cats" -> "cat"), the same way in questions and values."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


# Words too common to identify a value on their own.
STOPWORDS = frozenset(
    _stem(w)
    for w in """a an the of in on at to for and or is are was were be been with by from as it its
    no not yes all any what which who whom whose how many much each every that this these
    those than more less most least has have had do does did there their they them list
    show give find return tell me name names number count of""".split()
)


def words(text: str) -> tuple[str, ...]:
    """Lower-cased, stemmed word tokens: the unit questions and values are compared in."""
    return tuple(_stem(w) for w in _WORD.findall(text.lower()))


def display(value: object) -> str:
    """A database value as prompt text: str() with whitespace runs collapsed."""
    return _SPACE.sub(" ", str(value)).strip()


@dataclasses.dataclass(frozen=True)
class ValueOptions:
    num_samples: int = 2  # sample values shown per column
    max_sample_chars: int = 25  # longer values are never shown as samples
    max_indexed_chars: int = 64  # longer text values are not indexed for matching
    max_values_per_column: int = 100_000  # bounds index memory on large databases
    max_partial_words: int = 3  # longest value n-gram indexed for partial matches
    max_values_per_gram: int = 32  # a partial n-gram shared by more values names none of them


@dataclasses.dataclass(frozen=True)
class Match:
    column: int  # Spider column index
    value: str  # the value as stored (display form)
    exact: bool  # the whole value appears in the question, not just some of its words
    num_words: int  # words of the question the match covers


@dataclasses.dataclass(frozen=True)
class DatabaseValues:
    """Samples and the value index of one database."""

    samples: dict[int, tuple[str, ...]]  # column -> up to num_samples distinct values
    exact: dict[tuple[str, ...], list[tuple[int, str]]]  # value words -> (column, value)
    partial: dict[tuple[str, ...], list[tuple[int, str]]]  # value n-gram -> (column, value)
    schema_words: frozenset[str]  # words of table/column names: weak evidence of a value
    read_errors: int  # columns that could not be read (schema/database mismatch)
    longest_exact: int  # words in the longest indexed value
    longest_partial: int

    def match(self, question: str, limit: int) -> list[Match]:
        """Values named in `question`, best first: whole values, then longer partial ones."""
        q = words(question)
        found: dict[tuple[int, str], Match] = {}
        for n in range(min(self.longest_exact, len(q)), 0, -1):
            for start in range(len(q) - n + 1):
                for column, value in self.exact.get(q[start : start + n], ()):
                    found.setdefault((column, value), Match(column, value, True, n))
        for n in range(min(self.longest_partial, len(q)), 0, -1):
            for start in range(len(q) - n + 1):
                gram = q[start : start + n]
                if not self._informative(gram):
                    continue
                for column, value in self.partial.get(gram, ()):
                    found.setdefault((column, value), Match(column, value, False, n))
        ranked = sorted(found.values(), key=lambda m: (not m.exact, -m.num_words, m.column))
        return ranked[:limit]

    def _informative(self, gram: tuple[str, ...]) -> bool:
        return any(w not in STOPWORDS and w not in self.schema_words and len(w) >= 3 for w in gram)


def connect_read_only(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection that reads text that is not valid UTF-8 without failing."""
    conn = schema_lib.connect_read_only(db_path)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def _column_values(
    conn: sqlite3.Connection, table: str, column: str, where: str, limit: int
) -> Iterator[object]:
    col = schema_lib.quote_identifier(column)
    sql = f"SELECT DISTINCT {col} FROM {schema_lib.quote_identifier(table)} WHERE {col} IS NOT NULL AND {where}"
    yield from (row[0] for row in conn.execute(f"{sql} LIMIT {int(limit)}"))


def _samples(
    conn: sqlite3.Connection, table: str, column: str, options: ValueOptions
) -> tuple[str, ...]:
    """Up to num_samples distinct non-empty values of at most max_sample_chars."""
    short = (
        f"length(CAST({schema_lib.quote_identifier(column)} AS TEXT)) <= {options.max_sample_chars}"
    )
    samples = []
    for v in _column_values(conn, table, column, short, 4 * options.num_samples):
        text = "" if isinstance(v, bytes) else display(v)
        if text and text not in samples:
            samples.append(text)
    return tuple(samples[: options.num_samples])


def _indexed_texts(
    conn: sqlite3.Connection, table: str, column: str, options: ValueOptions
) -> list[str]:
    """Distinct non-empty text values short enough to be named in a question."""
    col = schema_lib.quote_identifier(column)
    short = f"typeof({col}) = 'text' AND length({col}) <= {options.max_indexed_chars}"
    texts = (
        display(v)
        for v in _column_values(conn, table, column, short, options.max_values_per_column)
    )
    return [t for t in texts if t]


def _add_to_index(
    exact: dict, partial: dict, column: int, value: str, options: ValueOptions
) -> None:
    """Indexes a value by all its words (exact) and by its shorter n-grams (partial)."""
    key = words(value)
    if not key or (len(key) == 1 and (key[0] in STOPWORDS or len(key[0]) < 2)):
        return
    exact.setdefault(key, []).append((column, value))
    grams = {
        key[start : start + n]
        for n in range(1, min(options.max_partial_words, len(key) - 1) + 1)
        for start in range(len(key) - n + 1)
    }
    for gram in sorted(grams):
        partial.setdefault(gram, []).append((column, value))


def read_database_values(
    db_path: str | os.PathLike[str], schema: schema_lib.Schema, options: ValueOptions
) -> DatabaseValues:
    """Reads samples and builds the value index of one database (read-only, once)."""
    samples, exact, partial, read_errors = {}, {}, {}, 0
    conn = connect_read_only(db_path)
    try:
        for i, c in enumerate(schema.columns):
            if c.table < 0:
                continue
            table = schema.tables[c.table].original
            try:
                samples[i] = _samples(conn, table, c.original, options)
                for text in _indexed_texts(conn, table, c.original, options):
                    _add_to_index(exact, partial, i, text, options)
            except sqlite3.DatabaseError:  # tables.json names a column the file lacks
                read_errors += 1
    finally:
        conn.close()
    partial = {k: v for k, v in partial.items() if len(v) <= options.max_values_per_gram}
    names = [t.name for t in schema.tables] + [t.original for t in schema.tables]
    names += [c.name for c in schema.columns[1:]] + [c.original for c in schema.columns[1:]]
    return DatabaseValues(
        samples=samples,
        exact=exact,
        partial=partial,
        schema_words=frozenset(w for name in names for w in words(name)),
        read_errors=read_errors,
        longest_exact=max(map(len, exact), default=0),
        longest_partial=max(map(len, partial), default=0),
    )


class ValueStore:
    """Per-database values, read on first use and cached; None for a missing database."""

    def __init__(
        self,
        schemas: dict[str, schema_lib.Schema],
        db_dir: str | os.PathLike[str] | None,
        options: ValueOptions,
    ):
        self._schemas = schemas
        self._db_dir = None if db_dir is None else os.fspath(db_dir)
        self.options = options
        self._cache: dict[str, DatabaseValues | None] = {}

    def db_path(self, db_id: str) -> str | None:
        return schema_lib.existing_db_file(self._db_dir, db_id)

    def get(self, db_id: str) -> DatabaseValues | None:
        if db_id not in self._cache:
            path = self.db_path(db_id)
            self._cache[db_id] = (
                None
                if path is None
                else read_database_values(path, self._schemas[db_id], self.options)
            )
        return self._cache[db_id]
