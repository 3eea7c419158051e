"""Test-suite copies of a database that test: the rows the queries name stay, the rest vary.

A copy of an independent random database rarely holds the values a gold query names
(`name = "Zoe Kowalski"`), so the gold returns nothing there and any empty prediction
passes. A copy here starts from the main database's rows: a row that a string literal of
a query on the database names (``kept_rows``) is kept as it is; in every other row each value
(attribute, and foreign key outside bridge tables) is redrawn with probability `share`
from the column's own generator. Keys, unique columns and row counts stay, so joins and
"parents without children" keep their shape while thresholds, groups and orderings see
different data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from kid.synth.database import Rows
from kid.synth.domains import Domain, TableSpec

SHARE = 0.5  # chance that a value of an unnamed row is redrawn
IDENTIFYING = 0.05  # a literal matching at most this share of a table's rows names them
_STRING = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"]|\"\")*)\"")


def string_literals(queries: Iterable[str]) -> frozenset[str]:
    """Lower-cased string literals of SQL queries, LIKE wildcards stripped."""
    out = set()
    for sql in queries:
        for single, double in _STRING.findall(sql):
            text = (single.replace("''", "'") if single else double.replace('""', '"')).strip("%")
            if text:
                out.add(text.lower())
    return frozenset(out)


def _texts(row: tuple) -> list[str]:
    return [v.lower() for v in row if isinstance(v, str)]


def kept_rows(rows: list[tuple], literals: frozenset[str]) -> set[int]:
    """Rows a literal names: one that matches (as a substring, as LIKE does) at most
    ``max(2, IDENTIFYING * len(rows))`` rows of the table, so "Zoe Kowalski" keeps her row
    while a category ("defender") leaves its many rows free to vary."""
    texts = [_texts(r) for r in rows]
    limit = max(2, IDENTIFYING * len(rows))
    kept: set[int] = set()
    for lit in literals:
        hits = [i for i, cells in enumerate(texts) if any(lit in c for c in cells)]
        if len(hits) <= limit:
            kept.update(hits)
    return kept


def _vary_table(
    rng: random.Random, table: TableSpec, rows: list[tuple], literals: frozenset[str], share: float
) -> list[tuple]:
    bridge = table.is_bridge
    redrawn = [
        i
        for i, c in enumerate(table.columns)
        if not c.unique and (c.role not in ("key", "fk") or (c.role == "fk" and not bridge))
    ]
    fk_values = {i: sorted({r[i] for r in rows}) for i in redrawn if table.columns[i].role == "fk"}
    kept = kept_rows(rows, literals)
    out = []
    for i, row in enumerate(rows):
        if i in kept:
            out.append(row)
            continue
        values = list(row)
        for j in redrawn:
            if rng.random() < share:
                column = table.columns[j]
                values[j] = rng.choice(fk_values[j]) if j in fk_values else column.generate(rng)
        out.append(tuple(values))
    return out


def vary(
    domain: Domain,
    rows: Rows,
    literals: frozenset[str],
    rng: random.Random,
    share: float = SHARE,
) -> Rows:
    """The rows of one test-suite copy of a database whose main rows are ``rows``."""
    return {t.name: _vary_table(rng, t, rows[t.name], literals, share) for t in domain.all_tables}
