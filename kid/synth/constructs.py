"""Which SQL constructs a query uses, read from Spider's parse, and the held-out pairs.

Tags are computed from the parsed gold query (not from the generator's choices), so
the statistics and the held-out rule apply to any Spider-format file. A query's tags
are the union over its whole tree: nested subqueries and set-operation arms included.

Held out of train (they appear only in dev and dev_in_domain), each a pair of
constructs that train shows separately but never together:

    group_by + like      GROUP BY over rows filtered with LIKE
    having + avg         AVG anywhere in a query with HAVING
    join + not_in        NOT IN in a query that joins (outside or inside the subquery)
    except + join        EXCEPT in a query that joins
    between + order_by   BETWEEN in an ordered query
"""

from __future__ import annotations

from collections.abc import Iterable

from kid.sql import spider_parse
from kid.sql.spider_parse import AGG_OPS, WHERE_OPS, Sql

HELD_OUT = (
    ("group_by", "like"),
    ("having", "avg"),
    ("join", "not_in"),
    ("except", "join"),
    ("between", "order_by"),
)
_OPERATOR_TAGS = {"=": "=", "<": "<", ">": ">", "between": "between", "like": "like"}


def _aggregates(sql: Sql) -> Iterable[int]:
    for agg, val_unit in sql["select"][1]:
        yield agg
        yield val_unit[1][0]
    for cond in sql["having"][::2]:
        yield cond[2][1][0]
    if sql["orderBy"]:
        for val_unit in sql["orderBy"][1]:
            yield val_unit[1][0]


def _own_tags(sql: Sql) -> set[str]:
    tags = set()
    if len(sql["from"]["table_units"]) > 1:
        tags.add("join")
    if sql["select"][0]:
        tags.add("distinct")
    if len(sql["select"][1]) > 1:
        tags.add("multi_select")
    for key, tag in (("where", "where"), ("groupBy", "group_by"), ("having", "having")):
        if sql[key]:
            tags.add(tag)
    if sql["orderBy"]:
        tags.add("order_by")
    if sql["limit"] is not None:
        tags.add("limit")
    for op in spider_parse.SQL_OPS:
        if sql[op] is not None:
            tags.add(op)
    units, connectors = spider_parse.conditions(sql, ("where", "having"))
    if "or" in connectors:
        tags.add("or")
    for negated, op, _, value, _ in units:
        name = WHERE_OPS[op]
        if name == "in":
            tags.add("not_in" if negated else "in")
        elif isinstance(value, dict):
            tags.add("scalar_subquery")
        if name in _OPERATOR_TAGS:
            tags.add(_OPERATOR_TAGS[name])
    tags.update(AGG_OPS[a] for a in _aggregates(sql) if a)
    return tags


def constructs(sql: Sql) -> frozenset[str]:
    """Tags of every construct in a parsed query, nested queries included."""
    tags = set(_own_tags(sql))
    for sub in spider_parse.nested(sql):
        tags |= constructs(sub)
    return frozenset(tags)


def held_out(tags: Iterable[str]) -> list[tuple[str, str]]:
    """The held-out pairs a query's tags contain."""
    tags = set(tags)
    return [pair for pair in HELD_OUT if tags.issuperset(pair)]
