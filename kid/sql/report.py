"""Accuracy by hardness level from per-example verdicts, and its printed table."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from kid.sql.scoring import LEVELS, Verdict


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(verdicts: Sequence[Verdict]) -> dict:
    """{"levels": {level: {count, exec, exec_n, match, match_n, ts, ts_n}}, "missing_database",
    "errors"}; accuracies are None where nothing was scored (missing databases and
    metrics not computed are left out of their means)."""
    groups = collections.defaultdict(list)
    for v in verdicts:
        groups[v.hardness].append(v)
        groups["all"].append(v)
    levels = {}
    for level in (*LEVELS, "all"):
        group = groups.get(level, [])
        if not group and level == "unknown":
            continue
        scored = {
            k: [getattr(v, k) for v in group if getattr(v, k) is not None]
            for k in ("exec", "match", "ts")
        }
        levels[level] = {
            "count": len(group),
            "exec": _mean(scored["exec"]),
            "exec_n": len(scored["exec"]),
            "match": _mean(scored["match"]),
            "match_n": len(scored["match"]),
            "ts": _mean(scored["ts"]),
            "ts_n": len(scored["ts"]),
        }
    missing = collections.Counter(v.db_id for v in verdicts if v.error == "missing_database")
    errors = collections.Counter(
        v.error for v in verdicts if v.error not in (None, "missing_database")
    )
    return {"levels": levels, "missing_database": dict(missing), "errors": dict(errors)}


def format_summary(summary: dict) -> str:
    """Spider-style table: levels as columns, one row per computed metric."""
    levels = summary["levels"]
    names = list(levels)
    rows = [["", *names], ["count", *(str(levels[n]["count"]) for n in names)]]
    for key, label in (("exec", "execution"), ("match", "exact match"), ("ts", "test-suite")):
        if levels["all"][key] is None:
            continue
        rows.append(
            [label, *("-" if levels[n][key] is None else f"{levels[n][key]:.3f}" for n in names)]
        )
    width = max(len(cell) for row in rows for cell in row) + 2
    lines = [
        "".join(cell.rjust(width) if i else cell.ljust(14) for i, cell in enumerate(row))
        for row in rows
    ]
    all_ = levels["all"]
    if summary["missing_database"]:
        counts = ", ".join(f"{db} {n}" for db, n in sorted(summary["missing_database"].items()))
        lines.append(
            f"missing databases: {sum(summary['missing_database'].values())} examples "
            f"excluded from execution ({counts}); execution scored on {all_['exec_n']}"
        )
    if all_["match"] is not None and all_["match_n"] < all_["count"]:
        lines.append(
            f"exact match scored on {all_['match_n']}: no schema for the other "
            f"{all_['count'] - all_['match_n']} (db_id in neither tables.json nor the database folder)"
        )
    if summary["errors"]:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(summary["errors"].items()))
        lines.append(f"failed queries: {counts}")
    return "\n".join(lines)
