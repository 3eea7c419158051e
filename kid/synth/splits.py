"""Fills a split with checked questions, to Spider dev's hardness mix.

Each split gets exact per-level quotas (Spider dev: 24% easy, 43% medium, 17% hard,
16% extra), spread round-robin over its databases. A slot is filled by sampling the
grammar with that level's knobs until a candidate passes every check: its level by
the official classifier, its SQL parses against the schema, no held-out construct pair
(train only), unseen question and SQL, a non-empty result, and no tie at an ORDER BY
... LIMIT cut (so the gold answer does not depend on how the engine breaks ties).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from kid.sql import hardness, spider_parse
from kid.synth import constructs, grammar
from kid.synth.query import Select, to_sql

SPIDER_DEV_MIX = {"easy": 0.24, "medium": 0.43, "hard": 0.17, "extra": 0.16}
MAX_ATTEMPTS = 2000  # per slot; a slot that fails this often is a grammar bug


@dataclasses.dataclass
class Seen:
    """Questions and SQL already used, per database, across the splits generated so far."""

    questions: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    queries: set[tuple[str, str]] = dataclasses.field(default_factory=set)


def quotas(n: int, mix: dict[str, float] = SPIDER_DEV_MIX) -> dict[str, int]:
    """Per-level counts summing to n, by largest remainder."""
    exact = {level: n * share for level, share in mix.items()}
    counts = {level: int(v) for level, v in exact.items()}
    by_remainder = sorted(mix, key=lambda level: counts[level] - exact[level])
    for level in by_remainder[: n - sum(counts.values())]:
        counts[level] += 1
    return counts


def non_empty(rows: list[tuple]) -> bool:
    """A result with at least one non-NULL value (an aggregate over no rows is NULL)."""
    return any(v is not None for row in rows for v in row)


def tie_at_cut(ctx: grammar.Context, q: Select) -> bool:
    """Whether rows tied on the ORDER BY key straddle the LIMIT."""
    if q.order_by is None or q.limit is None:
        return False
    probe = dataclasses.replace(q, items=(q.order_by,), limit=q.limit + 1)
    keys = [r[0] for r in ctx.rows(probe)]
    return len(keys) > q.limit and keys[q.limit - 1] == keys[q.limit]


def check(
    cand: grammar.Candidate,
    ctx: grammar.Context,
    names: dict[str, list[str]],
    level: str,
    seen: Seen,
    held_out: str,
) -> dict[str, Any] | None:
    """The Spider record for a candidate that passes every check, else None."""
    db_id = ctx.domain.db_id
    sql = to_sql(cand.select)
    if (db_id, sql) in seen.queries or (db_id, cand.question) in seen.questions:
        return None
    parsed = spider_parse.parse(sql, names)
    if hardness.level(parsed) != level:
        return None
    pairs = constructs.held_out(constructs.constructs(parsed))
    if (held_out == "forbid" and pairs) or (held_out == "require" and not pairs):
        return None
    if not non_empty(ctx.conn.execute(sql).fetchall()) or tie_at_cut(ctx, cand.select):
        return None
    seen.queries.add((db_id, sql))
    seen.questions.add((db_id, cand.question))
    return {"db_id": db_id, "question": cand.question, "query": sql}


def _slots(rng: random.Random, n: int, held_out_share: float | None) -> list[tuple[str, str]]:
    """(level, held-out rule) per example: "forbid" everywhere in train; elsewhere a
    `held_out_share` of the non-easy slots "require" a held-out pair, the rest "allow"."""
    levels = [level for level, k in quotas(n).items() for _ in range(k)]
    rng.shuffle(levels)
    if held_out_share is None:
        return [(level, "forbid") for level in levels]
    hard_enough = [i for i, level in enumerate(levels) if level != "easy"]
    required = set(rng.sample(hard_enough, min(len(hard_enough), round(held_out_share * n))))
    return [(lv, "require" if i in required else "allow") for i, lv in enumerate(levels)]


def generate(
    rng: random.Random,
    contexts: Sequence[grammar.Context],
    names: dict[str, dict[str, list[str]]],
    n: int,
    seen: Seen,
    held_out_share: float | None,
) -> list[dict[str, Any]]:
    """`n` records over `contexts` (round-robin) with Spider dev's hardness mix.

    held_out_share: None keeps held-out construct pairs out (train); a number makes at
    least that share of the examples use one (dev splits).
    """
    records = []
    for i, (level, held_out) in enumerate(_slots(rng, n, held_out_share)):
        ctx = contexts[i % len(contexts)]
        db_id = ctx.domain.db_id
        for _ in range(MAX_ATTEMPTS):
            cand = grammar.sample(rng, ctx, level)
            record = cand and check(cand, ctx, names[db_id], level, seen, held_out)
            if record:
                records.append(record)
                break
        else:
            raise RuntimeError(f"no {level} question ({held_out} held-out pairs) for {db_id}")
    return records
