"""SQL -> Spider's structured form, the representation hardness and exact match use.

Spider's evaluators do not compare SQL text: they parse it into a nested structure

    sql = {"select": (distinct, [(agg_id, val_unit), ...]),
           "from": {"table_units": [(type, table_id | sql), ...], "conds": condition},
           "where": condition, "groupBy": [col_unit, ...], "having": condition,
           "orderBy": (direction, [val_unit, ...]) | [], "limit": int | None,
           "intersect" / "union" / "except": sql | None}
    condition = [cond_unit, "and" | "or", cond_unit, ...]
    cond_unit = (not_op, op_id, val_unit, val1, val2)
    val_unit  = (unit_op, col_unit, col_unit | None)
    col_unit  = (agg_id, column_id, distinct)

and score components of it. Their verdicts depend on what that parser accepts (a
trailing comma in SELECT parses; `<>`, comma joins and column aliases do not), on how it
reads a query (one ORDER BY direction per clause, the left-most SELECT of a set
operation owns the clauses, tokens after the last clause are ignored) and on how it
splits the text into tokens (`tokenize`). This module reproduces that tokenizer and
grammar so kid's hardness and exact-match verdicts agree with the official ones.

Column ids are `__table.column__` (lower case, original names), `__all__` for `*`.
With `names=None` the parser is lenient (unknown names resolve to themselves, column
aliases are skipped): enough to count components of a query without its schema. It
still refuses what no schema could make parse: a name must be a word, not a keyword.

The parse is bounded: a query longer than `MAX_QUERY_CHARS` raises `TooLong` before any
work, one nesting subqueries or set operations deeper than `MAX_DEPTH` raises `TooDeep`
(the official parser dies of RecursionError a few hundred levels down; its evaluator
then scores the prediction as an empty query, which is what callers do with any
`SpiderParseError`). Work and memory are linear in the query's length.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

SQL_OPS = ("intersect", "union", "except")
CLAUSE_KEYWORDS = ("select", "from", "where", "group", "order", "limit", *SQL_OPS)
JOIN_KEYWORDS = ("join", "on", "as")
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
UNIT_OPS = ("none", "-", "+", "*", "/")
AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
COND_OPS = ("and", "or")
ORDER_OPS = ("desc", "asc")

MAX_QUERY_CHARS = 100_000  # Spider's longest gold query has under 600 characters
MAX_DEPTH = 32  # nested SELECTs incl. set-operation operands; Spider's gold nests <= 5

Sql = dict[str, Any]

# Tokens the grammar reads as keywords: no Spider schema has them as a bare name, and
# most can never be read as a name wherever they stand.
_KEYWORDS = frozenset(
    CLAUSE_KEYWORDS + JOIN_KEYWORDS + WHERE_OPS + AGG_OPS + COND_OPS + ORDER_OPS
) | {"by", "having", "distinct"}
_NAME = re.compile(r"\w*[^\W\d_]\w*")  # a word with a letter: `18_49_rating_share`, not `1`


class SpiderParseError(ValueError):
    """The query is outside the grammar Spider's evaluator accepts."""


class TooLong(SpiderParseError):
    """The query is longer than the parse's size limit (`MAX_QUERY_CHARS`)."""


class TooDeep(SpiderParseError):
    """The query nests SELECTs deeper than the parse's depth limit (`MAX_DEPTH`)."""


# --- tokenizer: Spider's `process_sql.tokenize`, see `tokenize` --------------------------
# nltk's word tokenizer, reduced to the rules that can fire on text without `'` or `"`.

_OPENING_QUOTES = (
    re.compile(r"[«“‘„]|`+"),  # a backtick run is one token ...
    re.compile(r"``"),  # ... until pairs are split off: ``` -> `` `
)
_PUNCTUATION = (
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),  # `,` before a digit stays: `1,2` is a token
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"--|[][(){}<>;@#$%&?!*\u2012-\u2015»”’]"), r" \g<0> "),  # brackets, signs
)
# nltk's apostrophe-free contractions ("cannot" -> "can not"), each a whole word
_CONTRACTIONS = re.compile(
    r"(?i)\b(?:(can)(not)|(gim|lem)(me)|(gon)(na)|(got)(ta))\b|\b(wan)(na)(?=\s|$)"
)
_FINAL_CLOSERS = "])}>»”’ "  # may follow a final period that is split off
_JOINED_EQ = ("!", ">", "<")


def _hide_strings(query: str) -> tuple[str, dict[str, str]]:
    """Steps 1-2: the text with each quoted value replaced by a placeholder word."""
    parts = query.replace("'", '"').split('"')
    if len(parts) % 2 == 0:
        raise SpiderParseError("unbalanced quotes")
    out, values, pos = [], {}, 0
    for k, part in enumerate(parts):
        if k % 2:
            key = f"__val_{pos - 1}_{pos + len(part)}__"
            values[key] = f'"{part}"'
            out.append(key)
        else:
            out.append(part)
        pos += len(part) + 1
    return "".join(out), values


def _split_final_period(text: str) -> str:
    """The word tokenizer's final period: `x.` at the end (before closers) is `x .`."""
    tail = len(text.rstrip().rstrip(_FINAL_CLOSERS))
    if tail >= 2 and text[tail - 1] == "." and text[tail - 2] != ".":
        return f"{text[: tail - 1]} . {text[tail:]}"
    return text


def _word_tokenize(text: str) -> list[str]:
    """nltk's word tokenizer (Treebank rules, one line) on text without quotes."""
    for pattern in _OPENING_QUOTES:
        text = pattern.sub(r" \g<0> ", text)
    text = _split_final_period(text)
    for pattern, replacement in _PUNCTUATION:
        text = pattern.sub(replacement, text)
    return _CONTRACTIONS.sub(_split_contraction, text).split()


def _split_contraction(match: re.Match) -> str:
    return " " + " ".join(part for part in match.groups() if part) + " "


def _join_comparisons(toks: list[str]) -> list[str]:
    """Step 4: `>`, `=` -> `>=` (also `<=`, `!=`)."""
    out: list[str] = []
    for tok in toks:
        if tok == "=" and out and out[-1] in _JOINED_EQ:
            out[-1] += "="
        else:
            out.append(tok)
    return out


def tokenize(query: str, max_chars: int = MAX_QUERY_CHARS) -> list[str]:
    """Spider's token stream, made as the official evaluator makes it.

    The official `process_sql.tokenize` (its verdicts come from nltk's
    `word_tokenize(..., preserve_line=True)`, no sentence splitting):
      1. every `'` becomes `"`; an odd count of `"` fails its assertion, and the query is
         unparseable (`"O'Brien"` holds three);
      2. each pair of `"` (1st-2nd, 3rd-4th, ...) is one value, replaced by the word
         `__val_{open}_{close}__`;
      3. nltk's Treebank-style tokenizer splits the text; tokens are lower-cased, and a
         placeholder token becomes its value, quotes included (`"John"`);
      4. a `=` token right after `!`, `>` or `<` joins it: `!=`, `>=`, `<=`.
    Only white space and some punctuation split, so what touches an operand stays glued
    to it: `age=32`, `t1.id=t2.id` and `like__val_4_8__` (from `LIKE'%a%'`) are single
    tokens, no column or operator, and the parse fails. `>`, `<`, `!` are split off but
    `=` is not: `age>=32` gives `>`, `=32` (fails), `age>= 32` gives `>=`, `32`.
    Backticks and `[ ]` are tokens of their own, no names (fails). `--` is a token and
    `/* */` gives `/ * ... * /`: a comment's text is read as tokens, so it fails the
    parse unless it follows the last clause, where the grammar ignores what is left.
    Dots are not split (`t1.name` is a token; `t1 . name` fails) except a final period.
    Checked against nltk 3.10.4, whose `regex` engine differs from Python's `re` on which
    characters are white space, word or digit (0x1c-0x1f, some non-ASCII): this follows
    `re`.

    Raises:
      TooLong: `query` has more than `max_chars` characters.
      SpiderParseError: unbalanced quotes.
    """
    if len(query) > max_chars:
        raise TooLong(f"query of {len(query)} characters, over the limit of {max_chars}")
    text, values = _hide_strings(query)
    toks = [tok.lower() for tok in _word_tokenize(text)]
    return _join_comparisons([values.get(tok, tok) for tok in toks])


# --- grammar -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Ctx:
    toks: list[str]
    tables: dict[str, str]  # alias or table name -> table name
    names: dict[str, list[str]] | None  # schema namespace; None: lenient
    max_depth: int = MAX_DEPTH
    depth: int = 0  # SELECTs open now

    def tok(self, i: int) -> str:
        if i >= len(self.toks):
            raise SpiderParseError("unexpected end of query")
        return self.toks[i]

    def at(self, i: int, *options: str) -> bool:
        return i < len(self.toks) and self.toks[i] in options

    def expect(self, i: int, tok: str) -> int:
        if self.tok(i) != tok:
            raise SpiderParseError(f"expected {tok!r} at token {i}, got {self.toks[i]!r}")
        return i + 1

    def table(self, name: str) -> str:
        if name in self.tables:
            return self.tables[name]
        if self.names is None:
            return _lenient_name(name)
        raise SpiderParseError(f"unknown table or alias {name!r}")


def _lenient_name(tok: str, dotted: bool = False) -> str:
    """Without a schema, a name is what some schema could hold: a word. Standing alone
    it is no keyword either (`t4.count` is a column, `count` alone never one)."""
    if not _NAME.fullmatch(tok) or (not dotted and tok in _KEYWORDS):
        raise SpiderParseError(f"{tok!r} cannot be a name")
    return tok


def _column(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, str]:
    tok = ctx.tok(i)
    if tok == "*":
        return i + 1, "__all__"
    if "." in tok:
        alias, *cols = tok.split(".")
        if len(cols) != 1:
            raise SpiderParseError(f"bad column {tok!r}")
        table, col = ctx.table(alias), cols[0]
        if ctx.names is None:
            _lenient_name(col, dotted=True)
        elif col not in ctx.names.get(table, ()):
            raise SpiderParseError(f"unknown column {tok!r}")
        return i + 1, f"__{table}.{col}__"
    if not default_tables:
        raise SpiderParseError(f"column {tok!r} outside any FROM table")
    for alias in default_tables:
        table = ctx.table(alias)
        if ctx.names is None:
            return i + 1, f"__{table}.{_lenient_name(tok)}__"
        if tok in ctx.names.get(table, ()):
            return i + 1, f"__{table}.{tok}__"
    raise SpiderParseError(f"unknown column {tok!r}")


def _col_unit(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, tuple]:
    block = ctx.tok(i) == "("
    i += block
    if ctx.tok(i) in AGG_OPS:
        agg = AGG_OPS.index(ctx.tok(i))
        i = ctx.expect(i + 1, "(")
        distinct = ctx.tok(i) == "distinct"
        i, col = _column(ctx, i + distinct, default_tables)
        # As in Spider, an aggregate returns before closing an outer parenthesis.
        return ctx.expect(i, ")"), (agg, col, distinct)
    distinct = ctx.tok(i) == "distinct"
    i, col = _column(ctx, i + distinct, default_tables)
    if block:
        i = ctx.expect(i, ")")
    return i, (AGG_OPS.index("none"), col, distinct)


def _val_unit(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, tuple]:
    block = ctx.tok(i) == "("
    i, unit1 = _col_unit(ctx, i + block, default_tables)
    op, unit2 = UNIT_OPS.index("none"), None
    if ctx.at(i, *UNIT_OPS):
        op = UNIT_OPS.index(ctx.toks[i])
        i, unit2 = _col_unit(ctx, i + 1, default_tables)
    if block:
        i = ctx.expect(i, ")")
    return i, (op, unit1, unit2)


def _value(ctx: _Ctx, start: int, default_tables: list[str]) -> tuple[int, Any]:
    block = ctx.tok(start) == "("
    i = start + block
    tok = ctx.tok(i)
    if tok == "select":
        i, value = _sql(ctx, i)
    elif '"' in tok:
        value, i = tok, i + 1
    else:
        try:
            value, i = float(tok), i + 1
        except ValueError:  # a column reference: read up to the end of this operand
            end = i
            stops = (",", ")", "and") + CLAUSE_KEYWORDS + JOIN_KEYWORDS
            while end < len(ctx.toks) and ctx.toks[end] not in stops:
                end += 1
            sub = dataclasses.replace(ctx, toks=ctx.toks[start:end])
            _, value = _col_unit(sub, 0, default_tables)
            i = end
    if block:
        i = ctx.expect(i, ")")
    return i, value


def _condition(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, list]:
    conds: list = []
    while i < len(ctx.toks):
        i, val_unit = _val_unit(ctx, i, default_tables)
        negated = ctx.tok(i) == "not"
        i += negated
        if ctx.tok(i) not in WHERE_OPS:
            raise SpiderParseError(f"unknown operator {ctx.toks[i]!r}")
        op = WHERE_OPS.index(ctx.toks[i])
        i, val1 = _value(ctx, i + 1, default_tables)
        val2 = None
        if op == WHERE_OPS.index("between"):
            i, val2 = _value(ctx, ctx.expect(i, "and"), default_tables)
        conds.append((negated, op, val_unit, val1, val2))
        if ctx.at(i, *CLAUSE_KEYWORDS, ")", ";", *JOIN_KEYWORDS):
            break
        if ctx.at(i, *COND_OPS):
            conds.append(ctx.toks[i])
            i += 1
    return i, conds


def _select(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, tuple]:
    i = ctx.expect(i, "select")
    distinct = ctx.at(i, "distinct")
    i += distinct
    units = []
    while i < len(ctx.toks) and ctx.toks[i] not in CLAUSE_KEYWORDS:
        agg = AGG_OPS.index("none")
        if ctx.toks[i] in AGG_OPS:
            agg = AGG_OPS.index(ctx.toks[i])
            i += 1
        i, val_unit = _val_unit(ctx, i, default_tables)
        units.append((agg, val_unit))
        if ctx.names is None and ctx.at(i, "as"):
            i += 2  # lenient: skip a column alias
        if ctx.at(i, ","):
            i += 1
    return i, (distinct, units)


def _from(ctx: _Ctx, start: int) -> tuple[int, list, list, list[str]]:
    try:
        i = ctx.toks.index("from", start) + 1
    except ValueError:
        raise SpiderParseError("no FROM clause") from None
    default_tables: list[str] = []
    table_units: list = []
    conds: list = []
    while i < len(ctx.toks):
        block = ctx.toks[i] == "("
        i += block
        if ctx.tok(i) == "select":
            i, sub = _sql(ctx, i)
            table_units.append(("sql", sub))
        else:
            i += ctx.at(i, "join")
            name = ctx.table(ctx.tok(i))
            if ctx.names is not None and name not in ctx.names:
                raise SpiderParseError(f"unknown table {name!r}")
            i += 3 if ctx.at(i + 1, "as") else 1
            table_units.append(("table_unit", f"__{name}__"))
            default_tables.append(name)
        if ctx.at(i, "on"):
            i, these = _condition(ctx, i + 1, default_tables)
            if conds:
                conds.append("and")
            conds.extend(these)
        if block:
            i = ctx.expect(i, ")")
        if ctx.at(i, *CLAUSE_KEYWORDS, ")", ";"):
            break
    return i, table_units, conds, default_tables


def _clause_condition(ctx: _Ctx, i: int, keyword: str, default_tables: list[str]):
    if not ctx.at(i, keyword):
        return i, []
    return _condition(ctx, i + 1, default_tables)


def _group_by(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, list]:
    units: list = []
    if not ctx.at(i, "group"):
        return i, units
    i = ctx.expect(i + 1, "by")
    while i < len(ctx.toks) and not ctx.at(i, *CLAUSE_KEYWORDS, ")", ";"):
        i, unit = _col_unit(ctx, i, default_tables)
        units.append(unit)
        if not ctx.at(i, ","):
            break
        i += 1
    return i, units


def _order_by(ctx: _Ctx, i: int, default_tables: list[str]) -> tuple[int, Any]:
    if not ctx.at(i, "order"):
        return i, []
    i = ctx.expect(i + 1, "by")
    direction, units = "asc", []
    while i < len(ctx.toks) and not ctx.at(i, *CLAUSE_KEYWORDS, ")", ";"):
        i, unit = _val_unit(ctx, i, default_tables)
        units.append(unit)
        if ctx.at(i, *ORDER_OPS):  # Spider keeps one direction: the last one written
            direction = ctx.toks[i]
            i += 1
        if not ctx.at(i, ","):
            break
        i += 1
    return i, (direction, units)


def _limit(ctx: _Ctx, i: int) -> tuple[int, int | None]:
    if not ctx.at(i, "limit"):
        return i, None
    try:
        return i + 2, int(ctx.tok(i + 1))
    except ValueError as e:
        raise SpiderParseError(f"bad LIMIT {ctx.toks[i + 1]!r}") from e


def _skip_semicolons(ctx: _Ctx, i: int) -> int:
    while ctx.at(i, ";"):
        i += 1
    return i


def _sql(ctx: _Ctx, start: int) -> tuple[int, Sql]:
    """A query at `start`: each nested SELECT and set-operation operand is one level."""
    if ctx.depth >= ctx.max_depth:
        raise TooDeep(f"SELECTs nested deeper than {ctx.max_depth}")
    ctx.depth += 1
    i, sql = _sql_body(ctx, start)
    ctx.depth -= 1
    return i, sql


def _sql_body(ctx: _Ctx, start: int) -> tuple[int, Sql]:
    block = ctx.tok(start) == "("
    i = start + block
    from_end, table_units, conds, default_tables = _from(ctx, start)
    _, select = _select(ctx, i, default_tables)
    sql: Sql = {"select": select, "from": {"table_units": table_units, "conds": conds}}
    i, sql["where"] = _clause_condition(ctx, from_end, "where", default_tables)
    i, sql["groupBy"] = _group_by(ctx, i, default_tables)
    i, sql["having"] = _clause_condition(ctx, i, "having", default_tables)
    i, sql["orderBy"] = _order_by(ctx, i, default_tables)
    i, sql["limit"] = _limit(ctx, i)
    i = _skip_semicolons(ctx, i)
    if block:
        i = ctx.expect(i, ")")
    i = _skip_semicolons(ctx, i)
    for op in SQL_OPS:
        sql[op] = None
    if ctx.at(i, *SQL_OPS):
        op = ctx.toks[i]
        i, sql[op] = _sql(ctx, i + 1)
    return i, sql


def _aliases(toks: list[str], names: dict[str, list[str]] | None) -> dict[str, str]:
    tables = {}
    for i, tok in enumerate(toks):
        if tok == "as":
            if not 0 < i < len(toks) - 1:
                raise SpiderParseError("dangling AS")
            tables[toks[i + 1]] = toks[i - 1]
    for table in names or ():
        if table in tables:
            raise SpiderParseError(f"alias {table!r} is also a table name")
        tables[table] = table
    return tables


def parse(
    query: str,
    names: dict[str, list[str]] | None = None,
    *,
    max_chars: int = MAX_QUERY_CHARS,
    max_depth: int = MAX_DEPTH,
) -> Sql:
    """Parses `query` into Spider's structure.

    Args:
      query: one SQL query.
      names: {table: [columns]} in lower case (`Schema.lowercase_names()`), to resolve
        columns as Spider's evaluator does; None parses leniently without a schema.
      max_chars, max_depth: the parse's bounds (`TooLong`, `TooDeep`).

    Raises:
      SpiderParseError: the query is outside the grammar or over a bound (the official
        evaluator fails on it too, and scores a prediction as an empty query).
    """
    toks = tokenize(query, max_chars)
    ctx = _Ctx(toks, _aliases(toks, names), names, max_depth)
    try:
        _, sql = _sql(ctx, 0)
    except (KeyError, IndexError) as e:  # defensive: report as a parse failure
        raise SpiderParseError(f"cannot parse: {e!r}") from e
    return sql


def empty_sql() -> Sql:
    """What Spider's evaluator substitutes for a prediction it cannot parse."""
    return {
        "select": (False, []),
        "from": {"table_units": [], "conds": []},
        "where": [],
        "groupBy": [],
        "having": [],
        "orderBy": [],
        "limit": None,
        "intersect": None,
        "union": None,
        "except": None,
    }


def conditions(
    sql: Sql, clauses: Sequence[str] = ("from", "where", "having")
) -> tuple[list, list[str]]:
    """(condition units, 'and'/'or' connectors) of the clauses. Each clause's list alternates
    unit, connector, unit, so it is split on its own before the clauses are joined."""
    lists = [sql["from"]["conds"] if c == "from" else sql[c] for c in clauses]
    return [u for c in lists for u in c[::2]], [o for c in lists for o in c[1::2]]


def nested(sql: Sql) -> list[Sql]:
    """Subqueries used as condition values, then the set-operation operand."""
    out = []
    for cond in conditions(sql)[0]:
        out.extend(v for v in cond[3:5] if isinstance(v, dict))
    out.extend(sql[op] for op in ("intersect", "except", "union") if sql[op] is not None)
    return out
