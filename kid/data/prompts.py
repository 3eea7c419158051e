"""Schema prompts for text-to-SQL: CodeS style for decoder LMs, PICARD style for T5.

CodeS style (Li et al. 2024, as used by the KID paper)::

    database schema :
    table singer , columns = [ singer.Singer_ID ( number | primary key | values : 1 , 2 ) , ... ]
    foreign keys :
    singer_in_concert.Singer_ID = singer.Singer_ID
    matched values :
    singer.Country ( France )
    evidence : ...            (BIRD, when configured)
    question : ...

T5 style (PICARD / UnifiedSKG serialisation; parentheses hold the matched values)::

    question | db_id | table : col , col ( v1 , v2 ) , ... | table : ...

A prompt that exceeds its token budget loses items in a fixed order (sample values,
comments, matched values, foreign keys, then columns from the end of the schema, then
evidence) until it fits; the question is never dropped. A missing database file
gives a schema-only prompt (no samples, no matched values). Both are counted.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence

from kid.data import schema as schema_lib
from kid.data import spider
from kid.data import values as values_lib

STYLES = ("codes", "t5")

_SPACE = re.compile(r"\s+")


class PromptError(ValueError):
    """A prompt that cannot be built (unknown style, question longer than the budget)."""


def normalize_sql(sql: str) -> str:
    """The training target: whitespace runs collapsed to one space, trailing `;` removed.

    Runs inside string literals are collapsed too. In Spider they are annotation
    artifacts ('Louisville ,  Kentucky'), every such query returns the same rows after
    collapsing, and tokenizers with whitespace-splitting normalisers (T5) could not
    reproduce them anyway.
    """
    sql = _SPACE.sub(" ", sql).strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    return sql


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    style: str = "codes"
    use_evidence: bool = False  # BIRD's external knowledge
    max_matched_values: int = 10
    values: values_lib.ValueOptions = values_lib.ValueOptions()

    def __post_init__(self):
        if self.style not in STYLES:
            raise PromptError(f"prompt style {self.style!r} is not one of {STYLES}")


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    schema_only: bool  # database file missing: no sample or matched values
    dropped: dict[str, int]  # items removed to fit the budget, by kind


@dataclasses.dataclass(frozen=True)
class _Column:
    index: int
    qualified: str  # table.column, original names
    name: str
    type: str
    primary: bool
    comment: str | None
    samples: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[_Column, ...]


@dataclasses.dataclass(frozen=True)
class _Content:
    """Everything a prompt may show; rendering leaves out a set of dropped items."""

    db_id: str
    question: str
    evidence: str
    tables: tuple[_Table, ...]
    foreign_keys: tuple[str, ...]
    matched: tuple[tuple[int, str], ...]  # (column, value), best first

    def column(self, index: int) -> _Column:
        return next(c for t in self.tables for c in t.columns if c.index == index)


_Item = tuple[str, int]  # (kind, key)


def _content(
    example: spider.Example,
    schema: schema_lib.Schema | None,
    db: values_lib.DatabaseValues | None,
    options: PromptOptions,
) -> _Content:
    tables, fks, matched = [], [], ()
    if schema is not None:
        primary = set(schema.primary_keys)
        for t, table in enumerate(schema.tables):
            columns = tuple(
                _Column(
                    i,
                    schema.qualified(i),
                    schema.columns[i].original,
                    schema.columns[i].type,
                    i in primary,
                    schema.columns[i].comment,
                    db.samples.get(i, ()) if db is not None else (),
                )
                for i in schema.table_columns(t)
            )
            tables.append(_Table(table.original, columns))
        fks = [f"{schema.qualified(a)} = {schema.qualified(b)}" for a, b in schema.foreign_keys]
        if db is not None:
            found = db.match(example.question, options.max_matched_values)
            matched = tuple((m.column, m.value) for m in found)
    evidence = example.evidence if options.use_evidence else ""
    return _Content(example.db_id, example.question, evidence, tuple(tables), tuple(fks), matched)


def _grouped_matches(content: _Content, dropped: frozenset[_Item]) -> dict[int, list[str]]:
    """{column: [values]} of the matches kept, columns in order of their best match."""
    groups: dict[int, list[str]] = {}
    for i, (column, value) in enumerate(content.matched):
        if ("matched_value", i) not in dropped:
            groups.setdefault(column, []).append(value)
    return groups


def _kept_columns(table: _Table, dropped: frozenset[_Item]) -> list[_Column]:
    return [c for c in table.columns if ("column", c.index) not in dropped]


def _codes_column(c: _Column, dropped: frozenset[_Item]) -> str:
    parts = [c.type]
    if c.primary:
        parts.append("primary key")
    if c.comment and ("comment", c.index) not in dropped:
        parts.append(f"comment : {c.comment}")
    if c.samples and ("sample_values", c.index) not in dropped:
        parts.append("values : " + " , ".join(c.samples))
    return f"{c.qualified} ( {' | '.join(parts)} )"


def _codes_pieces(content: _Content, dropped: frozenset[_Item]) -> list[str]:
    """The CodeS prompt as lines (each ending in a newline)."""
    lines = ["database schema :"]
    for table in content.tables:
        columns = _kept_columns(table, dropped)
        if columns:
            body = " , ".join(_codes_column(c, dropped) for c in columns)
            lines.append(f"table {table.name} , columns = [ {body} ]")
    fks = [fk for i, fk in enumerate(content.foreign_keys) if ("foreign_key", i) not in dropped]
    if fks:
        lines += ["foreign keys :", *fks]
    groups = _grouped_matches(content, dropped)
    if groups:
        lines.append("matched values :")
        lines += [f"{content.column(c).qualified} ( {' , '.join(v)} )" for c, v in groups.items()]
    if content.evidence and ("evidence", 0) not in dropped:
        lines.append(f"evidence : {content.evidence}")
    lines.append(f"question : {content.question}")
    return [line + "\n" for line in lines]


def _t5_pieces(content: _Content, dropped: frozenset[_Item]) -> list[str]:
    """The T5 prompt as " | "-separated segments (separator included)."""
    parts = [content.question]
    if content.evidence and ("evidence", 0) not in dropped:
        parts.append(f"evidence : {content.evidence}")
    parts.append(content.db_id)
    groups = _grouped_matches(content, dropped)
    for table in content.tables:
        columns = [
            f"{c.name} ( {' , '.join(groups[c.index])} )" if c.index in groups else c.name
            for c in _kept_columns(table, dropped)
        ]
        if columns:
            parts.append(f"{table.name} : {' , '.join(columns)}")
    return parts[:1] + [f" | {part}" for part in parts[1:]]


def _drop_order(content: _Content, style: str) -> list[_Item]:
    """Droppable items, least useful first; the question is never among them."""
    columns = [c for t in content.tables for c in t.columns][::-1]
    matched = [("matched_value", i) for i in reversed(range(len(content.matched)))]
    evidence = [("evidence", 0)] if content.evidence else []
    if style == "t5":
        return matched + [("column", c.index) for c in columns] + evidence
    return (
        [("sample_values", c.index) for c in columns if c.samples]
        + [("comment", c.index) for c in columns if c.comment]
        + matched
        + [("foreign_key", i) for i in reversed(range(len(content.foreign_keys)))]
        + [("column", c.index) for c in columns]
        + evidence
    )


def _dropped_counts(content: _Content, dropped: Sequence[_Item]) -> dict[str, int]:
    counts = collections.Counter(kind for kind, _ in dropped)
    gone = frozenset(dropped)
    tables = sum(1 for t in content.tables if t.columns and not _kept_columns(t, gone))
    if tables:
        counts["table"] = tables
    return dict(counts)


@dataclasses.dataclass
class PromptStats:
    """What prompt building left out, over all prompts built so far."""

    prompts: int = 0
    schema_only: int = 0  # database file missing
    missing_schema: int = 0  # db_id with no schema: question-only prompt
    truncated: int = 0  # prompts that lost items to the budget
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    missing_databases: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unreadable_columns: dict[str, int] = dataclasses.field(default_factory=dict)  # by db_id

    def summary(self) -> str:
        text = f"{self.prompts} prompts"
        if self.schema_only:
            dbs = ", ".join(f"{k} ({n})" for k, n in sorted(self.missing_databases.items()))
            text += f", {self.schema_only} schema-only (missing database: {dbs})"
        if self.missing_schema:
            text += f", {self.missing_schema} without schema"
        if self.unreadable_columns:
            dbs = ", ".join(f"{k} ({n})" for k, n in sorted(self.unreadable_columns.items()))
            text += f", columns missing in the database file: {dbs}"
        if self.truncated:
            items = ", ".join(f"{n} {k}" for k, n in sorted(self.dropped.items()))
            text += f", {self.truncated} truncated to the token budget (dropped {items})"
        return text


class Prompter:
    """Builds prompts for examples of one Spider-format dataset.

    Args:
      schemas: {db_id: Schema}.
      db_dir: folder of <db_id>/<db_id>.sqlite (None: schema-only prompts).
      options: style and value options.
      count_tokens: text -> number of tokens the model sees (special tokens included);
        required with `budget`.
      budget: the most tokens a prompt may have; None for no limit.
    """

    def __init__(
        self,
        schemas: dict[str, schema_lib.Schema],
        db_dir: str | None,
        options: PromptOptions | None = None,
        *,
        count_tokens: Callable[[str], int] | None = None,
        budget: int | None = None,
    ):
        if budget is not None and count_tokens is None:
            raise PromptError("a token budget needs count_tokens")
        options = options or PromptOptions()
        self.schemas = schemas
        self.options = options
        self.values = values_lib.ValueStore(schemas, db_dir, options.values)
        self.count_tokens = count_tokens
        self.budget = budget
        self.stats = PromptStats()
        self._pieces = _t5_pieces if options.style == "t5" else _codes_pieces
        self._piece_cache: dict[str, int] = {}

    def __call__(self, example: spider.Example) -> Prompt:
        schema = self.schemas.get(example.db_id)
        db = self.values.get(example.db_id) if schema is not None else None
        content = _content(example, schema, db, self.options)
        dropped = self._fit(content, example)
        text = self._text(content, dropped)
        prompt = Prompt(text, schema is not None and db is None, _dropped_counts(content, dropped))
        self._record(example.db_id, schema, db, prompt)
        return prompt

    def _fit(self, content: _Content, example: spider.Example) -> list[_Item]:
        """The shortest prefix of the drop order after which the prompt fits the budget.

        Token counts of whole prompts are exact but slow, so the search runs on an
        estimate, the sum of the (cached) counts of the prompt's lines, and exact
        counts then settle the answer: its prompt fits and one item fewer does not.
        """
        if self.budget is None or self.count_tokens is None:
            return []
        order = _drop_order(content, self.options.style)

        def fits(k: int) -> bool:
            return self.count_tokens(self._text(content, order[:k])) <= self.budget

        def estimate_fits(k: int) -> bool:
            pieces = self._pieces(content, frozenset(order[:k]))
            return self._special_tokens + sum(map(self._piece_tokens, pieces)) <= self.budget

        if fits(0):
            return []
        lo, hi = 1, len(order)  # the first k with estimate_fits(k), or len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            if estimate_fits(mid):
                hi = mid
            else:
                lo = mid + 1
        k = lo
        while not fits(k):
            if k == len(order):
                raise PromptError(
                    f"{example.source}[{example.index}]: the question alone exceeds the "
                    f"prompt budget of {self.budget} tokens"
                )
            k += 1
        while k > 1 and fits(k - 1):
            k -= 1
        return order[:k]

    def _text(self, content: _Content, dropped: Sequence[_Item]) -> str:
        return "".join(self._pieces(content, frozenset(dropped)))

    @functools.cached_property
    def _special_tokens(self) -> int:
        return self.count_tokens("")

    def _piece_tokens(self, piece: str) -> int:
        if piece not in self._piece_cache:
            if len(self._piece_cache) > 1 << 18:  # schema lines repeat per database
                self._piece_cache.clear()
            self._piece_cache[piece] = self.count_tokens(piece) - self._special_tokens
        return self._piece_cache[piece]

    def _record(
        self,
        db_id: str,
        schema: schema_lib.Schema | None,
        db: values_lib.DatabaseValues | None,
        prompt: Prompt,
    ) -> None:
        self.stats.prompts += 1
        if db is not None and db.read_errors:
            self.stats.unreadable_columns[db_id] = db.read_errors
        if schema is None:
            self.stats.missing_schema += 1
        if prompt.schema_only:
            self.stats.schema_only += 1
            self.stats.missing_databases[db_id] += 1
        if prompt.dropped:
            self.stats.truncated += 1
            self.stats.dropped.update(prompt.dropped)
