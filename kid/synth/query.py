"""A small SQL syntax tree and its rendering in Spider's gold-query style.

Questions are generated as trees so that the same query can be rendered as gold SQL,
re-rendered for checks (the ORDER BY key added to SELECT, say), and never needs string
surgery. The style follows Spider's gold: upper-case keywords, lower-case aggregates,
` , ` between items, double-quoted strings, and `T1`, `T2` aliases for every table of a
join (`SELECT T1.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.a_id`). Aliases are
numbered over the whole query so that no alias names two tables (Spider's parser keeps
one alias table per query), and set-operation arms reuse `T1` for the same table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

AGGREGATES = ("count", "avg", "sum", "min", "max")
OPERATORS = ("=", "<", ">", "LIKE", "BETWEEN", "IN", "NOT IN")
SET_OPERATORS = ("INTERSECT", "UNION", "EXCEPT")


@dataclasses.dataclass(frozen=True)
class Column:
    table: str
    name: str


@dataclasses.dataclass(frozen=True)
class Expr:
    """A SELECT / ORDER BY / HAVING item: a column, an aggregate of one, or count(*)."""

    agg: str = ""
    column: Column | None = None  # None: `*`
    distinct: bool = False

    def __post_init__(self):
        if self.agg and self.agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.agg!r}")
        if self.column is None and self.agg != "count":
            raise ValueError("only count takes *")


@dataclasses.dataclass(frozen=True)
class Predicate:
    left: Expr
    op: str
    values: tuple[Any, ...]  # one literal, two for BETWEEN, or one Select for IN / scalar

    def __post_init__(self):
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}")


@dataclasses.dataclass(frozen=True)
class Join:
    table: str
    left: Column  # a column of a table already in FROM
    right: Column  # a column of `table`


@dataclasses.dataclass(frozen=True)
class Select:
    items: tuple[Expr, ...]
    table: str
    joins: tuple[Join, ...] = ()
    where: tuple[Predicate, ...] = ()
    conj: str = "AND"
    group_by: tuple[Column, ...] = ()
    having: Predicate | None = None
    order_by: Expr | None = None
    descending: bool = False
    limit: int | None = None
    distinct: bool = False
    compound: tuple[str, Select] | None = None  # (INTERSECT | UNION | EXCEPT, right arm)

    def __post_init__(self):
        if self.compound is not None and self.compound[0] not in SET_OPERATORS:
            raise ValueError(f"unknown set operator {self.compound[0]!r}")

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, *(j.table for j in self.joins))


def literal(value: Any) -> str:
    """A value as gold SQL and questions write it: strings double-quoted, numbers bare."""
    if isinstance(value, str):
        if '"' in value:
            raise ValueError(f"value {value!r} contains a double quote")
        return f'"{value}"'
    if isinstance(value, float):
        return repr(round(value, 2))
    return str(value)


class _Aliases:
    """Hands out T1, T2, ...: a new FROM reuses Tk for the same table, never for another."""

    def __init__(self):
        self._tables: dict[str, str] = {}  # alias -> table

    def assign(self, tables: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}  # table -> alias, for this FROM
        for table in tables:
            k = 1
            while f"T{k}" in out.values() or self._tables.get(f"T{k}", table) != table:
                k += 1
            self._tables[f"T{k}"] = table
            out[table] = f"T{k}"
        return out


def _column(column: Column, aliases: dict[str, str]) -> str:
    return f"{aliases[column.table]}.{column.name}" if aliases else column.name


def _expr(expr: Expr, aliases: dict[str, str]) -> str:
    inner = "*" if expr.column is None else _column(expr.column, aliases)
    if expr.distinct:
        inner = f"DISTINCT {inner}"
    return f"{expr.agg}({inner})" if expr.agg else inner


def _predicate(p: Predicate, aliases: dict[str, str], names: _Aliases) -> str:
    left = _expr(p.left, aliases)
    if isinstance(p.values[0], Select):
        return f"{left} {p.op} ({_render(p.values[0], names)})"
    if p.op == "BETWEEN":
        return f"{left} BETWEEN {literal(p.values[0])} AND {literal(p.values[1])}"
    return f"{left} {p.op} {literal(p.values[0])}"


def _render(q: Select, names: _Aliases) -> str:
    if len(q.tables) != len(set(q.tables)):
        raise ValueError(f"table joined twice: {q.tables}")
    aliases = names.assign(q.tables) if q.joins else {}
    items = " , ".join(_expr(e, aliases) for e in q.items)
    sql = f"SELECT {'DISTINCT ' if q.distinct else ''}{items} FROM {q.table}"
    if aliases:
        sql += f" AS {aliases[q.table]}"
    for j in q.joins:
        sql += (
            f" JOIN {j.table} AS {aliases[j.table]}"
            f" ON {_column(j.left, aliases)} = {_column(j.right, aliases)}"
        )
    if q.where:
        sql += " WHERE " + f" {q.conj} ".join(_predicate(p, aliases, names) for p in q.where)
    if q.group_by:
        sql += " GROUP BY " + " , ".join(_column(c, aliases) for c in q.group_by)
    if q.having is not None:
        sql += " HAVING " + _predicate(q.having, aliases, names)
    if q.order_by is not None:
        sql += f" ORDER BY {_expr(q.order_by, aliases)}{' DESC' if q.descending else ''}"
    if q.limit is not None:
        sql += f" LIMIT {q.limit}"
    if q.compound is not None:
        op, right = q.compound
        sql += f" {op} {_render(right, names)}"
    return sql


def to_sql(q: Select) -> str:
    """Gold SQL text of `q` in Spider's style."""
    return _render(q, _Aliases())
