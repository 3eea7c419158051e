"""What a question is about: a set of rows of one table, narrowed by filters.

The grammar samples these meanings, and both the gold SQL (here) and the question
(`phrasing`) are rendered from the same object, so the two cannot drift apart. A
filter is a condition on the table's own column (WHERE), on its parent's column (a
JOIN along the foreign key), on related rows (a nested `id IN` / `NOT IN` subquery,
through a child table or a many-to-many bridge), or a comparison with the column's
average (a nested scalar subquery).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kid.synth.domains import Bridge, ColumnSpec, Domain, TableSpec
from kid.synth.query import Column, Expr, Join, Predicate, Select


@dataclasses.dataclass(frozen=True)
class Cond:
    """`table.column op values`; op is =, <, >, LIKE or BETWEEN."""

    table: TableSpec
    column: ColumnSpec
    op: str
    values: tuple[Any, ...]

    def predicate(self) -> Predicate:
        return Predicate(
            Expr(column=Column(self.table.name, self.column.name)), self.op, self.values
        )


@dataclasses.dataclass(frozen=True)
class Relation:
    """Rows of `source` related to rows of `target`: `source.id IN (SELECT key FROM via ...)`.

    `via` is a child table of `source` (then `target` is `via` itself) or a bridge
    table joined to `target` through `hop`.
    """

    source: TableSpec
    target: TableSpec
    via: TableSpec
    key: ColumnSpec  # via's foreign key to source
    hop: ColumnSpec | None  # via's foreign key to target (bridges only)
    has: tuple[str, ...]
    has_no: tuple[str, ...]

    def subquery(self, cond: Cond | None) -> Select:
        item = (Expr(column=Column(self.via.name, self.key.name)),)
        where = (cond.predicate(),) if cond else ()
        if self.hop is None or cond is None:
            return Select(item, self.via.name, where=where)
        join = Join(
            self.target.name,
            Column(self.via.name, self.hop.name),
            Column(self.target.name, self.hop.referenced_key),
        )
        return Select(item, self.via.name, (join,), where)


def relations(domain: Domain, table: TableSpec) -> list[Relation]:
    """Every way rows of `table` have related rows: its child tables, then its bridges."""
    out = []
    for child in domain.tables:
        for fk in child.foreign_keys:
            if fk.references == table.name:
                out.append(Relation(table, child, child, fk, None, fk.has, fk.has_no))
    for bridge in domain.bridges:
        via = domain.table(bridge.table)
        for near, far, has, has_no in _bridge_sides(bridge):
            if via.column(near).references == table.name:
                target = domain.table(via.column(far).references)
                out.append(
                    Relation(table, target, via, via.column(near), via.column(far), has, has_no)
                )
    return out


def _bridge_sides(bridge: Bridge):
    yield bridge.a, bridge.b, bridge.a_has, bridge.a_has_no
    yield bridge.b, bridge.a, bridge.b_has, bridge.b_has_no


@dataclasses.dataclass(frozen=True)
class Where:
    """A condition on the entity's own column."""

    cond: Cond


@dataclasses.dataclass(frozen=True)
class ParentWhere:
    """The entity's parent, through foreign key `fk`, satisfies `cond`."""

    fk: ColumnSpec
    cond: Cond


@dataclasses.dataclass(frozen=True)
class Related:
    """The entity has (or, negated, has no) related rows, optionally satisfying `cond`."""

    relation: Relation
    cond: Cond | None
    negated: bool


@dataclasses.dataclass(frozen=True)
class VersusAverage:
    """The entity's `column` is above (>) or below (<) its average over the table."""

    table: TableSpec
    column: ColumnSpec
    op: str


Filter = Where | ParentWhere | Related | VersusAverage


def filter_predicate(f: Filter, table: TableSpec) -> Predicate:
    if isinstance(f, Where | ParentWhere):
        return f.cond.predicate()
    if isinstance(f, Related):
        op = "NOT IN" if f.negated else "IN"
        key = Column(table.name, f.relation.key.referenced_key)
        return Predicate(Expr(column=key), op, (f.relation.subquery(f.cond),))
    average = Select((Expr("avg", Column(f.table.name, f.column.name)),), f.table.name)
    return Predicate(Expr(column=Column(table.name, f.column.name)), f.op, (average,))


@dataclasses.dataclass(frozen=True)
class Entities:
    """Rows of `table` that pass the filters (joined by AND or OR)."""

    table: TableSpec
    filters: tuple[Filter, ...] = ()
    conj: str = "AND"

    def parent_keys(self) -> list[ColumnSpec]:
        return [f.fk for f in self.filters if isinstance(f, ParentWhere)]

    def select(self, items: tuple[Expr, ...], parents: tuple[ColumnSpec, ...] = ()) -> Select:
        """SELECT items FROM the table, joined to the parents that items or filters use."""
        keys = list(dict.fromkeys((*parents, *self.parent_keys())))
        joins = tuple(
            Join(
                fk.references,
                Column(self.table.name, fk.name),
                Column(fk.references, fk.referenced_key),
            )
            for fk in keys
        )
        where = tuple(filter_predicate(f, self.table) for f in self.filters)
        return Select(items, self.table.name, joins, where, self.conj if len(where) > 1 else "AND")
