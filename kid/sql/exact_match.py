"""Spider's exact set match (EM): SQL components compared as sets, values ignored.

Both queries are parsed by `kid.sql.spider_parse` in the schema's namespace, then put in
Spider's canonical form (condition values dropped, DISTINCT dropped, foreign-key columns
replaced by the key they reference) and compared clause by clause. A prediction outside
Spider's grammar or tokenisation is scored as an empty query, as the official evaluator
does: so `<>`, `age=32`, backticks and `LIKE'%a%'` get EM 0 while `!=` does not, and a
trailing comma in SELECT still matches. So is one over the parse's bounds (`TooLong`,
`TooDeep`), as the official evaluator scores one its parser dies on. EM needs only the
schema (tables.json), never the database.
"""

from __future__ import annotations

from collections.abc import Iterable

from kid.data.schema import Schema
from kid.sql import spider_parse
from kid.sql.spider_parse import Sql


def foreign_key_map(schema: Schema) -> dict[str, str]:
    """Column id -> id of the smallest-index column in its foreign-key group."""
    ids = [
        "__all__"
        if c.table < 0
        else f"__{schema.tables[c.table].original.lower()}.{c.original.lower()}__"
        for c in schema.columns
    ]
    groups: list[set[int]] = []
    for a, b in schema.foreign_keys:
        # Spider joins a pair into the first group holding either end (no transitive merge).
        group = next((g for g in groups if a in g or b in g), None)
        if group is None:
            group = set()
            groups.append(group)
        group.update((a, b))
    return {ids[i]: ids[min(g)] for g in groups for i in g}


def _strip_values(sql: Sql | None) -> Sql | None:
    """Drops literal values from conditions (subqueries stay, stripped in turn)."""
    if sql is None:
        return None

    def condition(conds: list) -> list:
        return [
            c
            if isinstance(c, str)
            else (*c[:3], *(_strip_values(v) if isinstance(v, dict) else None for v in c[3:5]))
            for c in conds
        ]

    out = dict(sql, where=condition(sql["where"]), having=condition(sql["having"]))
    out["from"] = dict(sql["from"], conds=condition(sql["from"]["conds"]))
    for op in ("intersect", "except", "union"):
        out[op] = _strip_values(sql[op])
    return out


def _canonical_columns(sql: Sql | None, valid: set[str], fk: dict[str, str]) -> Sql | None:
    """Foreign-key columns of FROM tables -> their group's key; DISTINCT flags dropped."""
    if sql is None:
        return None

    def col(unit):
        if unit is None:
            return None
        agg, column, _ = unit
        return agg, fk[column] if column in fk and column in valid else column, None

    def val(unit):
        return unit[0], col(unit[1]), col(unit[2])

    def condition(conds: list) -> list:
        return [c if isinstance(c, str) else (c[0], c[1], val(c[2]), c[3], c[4]) for c in conds]

    out = dict(sql)
    out["select"] = (None, [(agg, val(u)) for agg, u in sql["select"][1]])
    out["from"] = dict(sql["from"], conds=condition(sql["from"]["conds"]))
    out["where"], out["having"] = condition(sql["where"]), condition(sql["having"])
    out["groupBy"] = [col(u) for u in sql["groupBy"]]
    if sql["orderBy"]:
        out["orderBy"] = (sql["orderBy"][0], [val(u) for u in sql["orderBy"][1]])
    for op in ("intersect", "except", "union"):
        out[op] = _canonical_columns(sql[op], valid, fk)
    return out


def canonical(sql: Sql, names: dict[str, list[str]], fk: dict[str, str]) -> Sql:
    """Spider's evaluation form of a parsed query."""
    tables = {unit[1][2:-2] for unit in sql["from"]["table_units"] if unit[0] == "table_unit"}
    valid = {f"__{t}.{c}__" for t in tables for c in names.get(t, ())}
    return _canonical_columns(_strip_values(sql), valid, fk)


def _multiset_hits(pred: Iterable, label: Iterable) -> int:
    remaining = list(label)
    hits = 0
    for item in pred:
        if item in remaining:
            remaining.remove(item)
            hits += 1
    return hits


def _same(pred: list, label: list) -> bool:
    """Spider's component score is 1 iff sizes agree and every predicted item matches."""
    return len(pred) == len(label) and _multiset_hits(pred, label) == len(pred)


def _keywords(sql: Sql) -> set[str]:
    found = {
        k
        for k, field in (
            ("where", "where"),
            ("group", "groupBy"),
            ("having", "having"),
            ("limit", "limit"),
            ("except", "except"),
            ("union", "union"),
            ("intersect", "intersect"),
        )
        if sql[field] not in (None, [])
    }
    if sql["orderBy"]:
        found |= {"order", sql["orderBy"][0]}
    units, connectors = spider_parse.conditions(sql)
    if "or" in connectors:
        found.add("or")
    ops = spider_parse.WHERE_OPS
    for keyword, present in (
        ("not", any(u[0] for u in units)),
        ("in", any(u[1] == ops.index("in") for u in units)),
        ("like", any(u[1] == ops.index("like") for u in units)),
    ):
        if present:
            found.add(keyword)
    return found


def _set_operations_match(pred: Sql, label: Sql) -> bool:
    for op in ("intersect", "except", "union"):
        if (pred[op] is None) != (label[op] is None):
            return False
        if pred[op] is not None and not components_match(pred[op], label[op]):
            return False
    return True


def components_match(pred: Sql, label: Sql) -> bool:
    """Exact set match of two canonical queries."""
    p_sel, l_sel = pred["select"][1], label["select"][1]
    p_where, l_where = pred["where"][::2], label["where"][::2]
    p_group = [u[1] for u in pred["groupBy"]]
    l_group = [u[1] for u in label["groupBy"]]
    checks = (
        _same(p_sel, l_sel),
        _same([u[1] for u in p_sel], [u[1] for u in l_sel]),
        _same(p_where, l_where),
        _same([u[2] for u in p_where], [u[2] for u in l_where]),
        _same([c.split(".")[-1] for c in p_group], [c.split(".")[-1] for c in l_group]),
        # GROUP BY with HAVING: same columns in order and the same HAVING.
        bool(p_group) == bool(l_group)
        and (not l_group or (p_group == l_group and pred["having"] == label["having"])),
        # ORDER BY: same clause, and LIMIT present in both or neither.
        bool(pred["orderBy"]) == bool(label["orderBy"])
        and (
            not label["orderBy"]
            or (
                pred["orderBy"] == label["orderBy"]
                and (pred["limit"] is None) == (label["limit"] is None)
            )
        ),
        set(pred["where"][1::2]) == set(label["where"][1::2]),
        _set_operations_match(pred, label),
        _keywords(pred) == _keywords(label),
    )
    if not all(checks):
        return False
    if not label["from"]["table_units"]:
        return True
    return sorted(map(repr, pred["from"]["table_units"])) == sorted(
        map(repr, label["from"]["table_units"])
    )


def exact_match(gold: str, pred: str, schema: Schema) -> int:
    """EM of `pred` against `gold` (1 or 0); raises SpiderParseError if gold won't parse
    (or is over the parse's bounds)."""
    names = schema.lowercase_names()
    fk = foreign_key_map(schema)
    label = canonical(spider_parse.parse(gold, names), names, fk)
    try:
        parsed = spider_parse.parse(pred, names)
    except spider_parse.SpiderParseError:
        parsed = spider_parse.empty_sql()
    return int(components_match(canonical(parsed, names, fk), label))
