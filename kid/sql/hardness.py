"""Spider's difficulty levels (easy / medium / hard / extra) from the query text alone.

The rules are those of Spider's evaluator, applied to the structure of
`kid.sql.spider_parse`; they count components, and keep the evaluator's literal
reading of its own code (in WHERE only NOT conditions count as "aggregations", and in
HAVING each AND/OR does), because the published level counts depend on it.
"""

from __future__ import annotations

from kid.sql import spider_parse
from kid.sql.spider_parse import AGG_OPS, WHERE_OPS, Sql

LEVELS = ("easy", "medium", "hard", "extra")


def _has_agg(unit) -> bool:
    return unit[0] != AGG_OPS.index("none")


def _count_agg(units) -> int:
    return sum(_has_agg(u) for u in units)


def component1(sql: Sql) -> int:
    """WHERE, GROUP BY, ORDER BY, LIMIT, each join, each OR, each LIKE."""
    count = sum(bool(sql[k]) for k in ("where", "groupBy", "orderBy"))
    count += sql["limit"] is not None
    count += max(len(sql["from"]["table_units"]) - 1, 0)
    units, connectors = spider_parse.conditions(sql)
    count += connectors.count("or")
    count += sum(u[1] == WHERE_OPS.index("like") for u in units)
    return count


def component2(sql: Sql) -> int:
    """Nested queries in conditions plus a set operation."""
    return len(spider_parse.nested(sql))


def others(sql: Sql) -> int:
    """More than one aggregation, select column, WHERE condition or GROUP BY column."""
    aggs = _count_agg(sql["select"][1]) + _count_agg(sql["where"][::2])
    aggs += _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        units = sql["orderBy"][1]
        aggs += _count_agg([u[1] for u in units if u[1]] + [u[2] for u in units if u[2]])
    aggs += _count_agg(sql["having"])  # connectors count too, as in Spider
    return sum(
        (aggs > 1, len(sql["select"][1]) > 1, len(sql["where"]) > 1, len(sql["groupBy"]) > 1)
    )


def level(sql: Sql) -> str:
    """Hardness of a parsed query."""
    c1, c2, c3 = component1(sql), component2(sql), others(sql)
    if c1 <= 1 and c3 == 0 and c2 == 0:
        return "easy"
    if (c3 <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and c3 < 2 and c2 == 0):
        return "medium"
    if (
        (c3 > 2 and c1 <= 2 and c2 == 0)
        or (2 < c1 <= 3 and c3 <= 2 and c2 == 0)
        or (c1 <= 1 and c3 == 0 and c2 <= 1)
    ):
        return "hard"
    return "extra"


def hardness(query: str) -> str:
    """Hardness of a SQL string, parsed without a schema.

    Raises:
      SpiderParseError: the query is outside Spider's grammar for any schema (the official
        classifier's parse fails too, e.g. on `SELECT max(age) - min(age) FROM singer`),
        or over the parse's bounds (`TooLong`, `TooDeep`).
    """
    return level(spider_parse.parse(query))
