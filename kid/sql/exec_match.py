"""When two query results count as the same: Spider test-suite EX and BIRD EX semantics.

Spider (default semantics of the test-suite evaluator, `exec_eval.eval_exec_match`):
  1. the prediction's every `value` becomes `1` (the official CLI does this to plug
     Spider's anonymised values; it also breaks columns such as `attribute_value`,
     and kid keeps it by default so verdicts agree with the official ones; pass
     `value_rewrite=False` to turn it off);
  2. `> =`, `< =`, `! =` are closed up, and `YEAR(CURDATE())` becomes 2020, in both;
  3. every DISTINCT keyword is removed from both queries, inside aggregates too,
     unless `keep_distinct`;
  4. rows are compared as bags, in order only when the gold text contains `order by`
     (lower-cased substring test, as the evaluator does), allowing any permutation of
     the columns; values compare as Python values (1 == 1.0, text decoded leniently).
BIRD: the results are equal as sets of rows; queries run as written.

Where kid departs from the official scripts (whose behaviour there is an accident):
a string of several statements is `forbidden` and scores 0 (the test-suite script's
default path silently runs only the first statement, and with --keep_distinct fails);
an empty prediction is a `syntax` error (the official scripts misread or crash on it);
BIRD text is decoded leniently as in Spider (BIRD's script fails on invalid UTF-8).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

Row = tuple
# Quoted text and comments are skipped; a bare word `distinct` is removed.
_QUOTED_OR_DISTINCT = re.compile(
    r"""('(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|$))"""
    r"|\bdistinct\b",
    re.IGNORECASE | re.DOTALL,
)
_CURRENT_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
_SPACED_COMPARISONS = (("> =", ">="), ("< =", "<="), ("! =", "!="))


def remove_distinct(sql: str) -> str:
    """Drops every DISTINCT keyword, leaving quoted text and comments alone."""
    return _QUOTED_OR_DISTINCT.sub(lambda m: m.group(1) or "", sql)


def normalize(sql: str, *, keep_distinct: bool = False) -> str:
    """The text the Spider evaluator executes for a query (steps 2 and 3 above)."""
    for spaced, closed in _SPACED_COMPARISONS:
        sql = sql.replace(spaced, closed)
    if not keep_distinct:
        sql = remove_distinct(sql)
    return _CURRENT_YEAR.sub("2020", sql)


def spider_queries(
    gold: str, pred: str, *, keep_distinct: bool = False, value_rewrite: bool = True
) -> tuple[str, str, bool]:
    """(gold text, prediction text, order matters) as the Spider evaluator runs them."""
    if value_rewrite:
        pred = pred.replace("value", "1")
    gold = normalize(gold, keep_distinct=keep_distinct)
    pred = normalize(pred, keep_distinct=keep_distinct)
    return gold, pred, "order by" in gold.lower()


def _sort_key(value) -> str:
    return str(value) + str(type(value))


def _unordered(rows: Sequence[Row]) -> list[Row]:
    """Each row's values sorted: the evaluator's quick test, whatever the column order."""
    return [tuple(sorted(row, key=_sort_key)) for row in rows]


def _same_rows(a: Sequence[Row], b: Sequence[Row], order_matters: bool) -> bool:
    if order_matters:
        return list(a) == list(b)
    return collections.Counter(a) == collections.Counter(b)


def _column_permutation_exists(
    gold: Sequence[Row], pred: Sequence[Row], order_matters: bool
) -> bool:
    """Is there an order of pred's columns under which the rows equal gold's?

    Depth-first over gold columns; a partial assignment survives only if the projected
    rows already agree (a necessary condition), which keeps the search small.
    """
    width = len(gold[0])
    gold_columns = [[row[i] for row in gold] for i in range(width)]
    pred_columns = [[row[j] for row in pred] for j in range(width)]
    candidates = [
        [j for j in range(width) if _same_rows(gold_columns[i], pred_columns[j], order_matters)]
        for i in range(width)
    ]

    def extend(chosen: list[int]) -> bool:
        i = len(chosen)
        if i == width:
            return True
        for j in candidates[i]:
            if j in chosen:
                continue
            cols = chosen + [j]
            if i == 0 or _same_rows(
                [row[: i + 1] for row in gold],
                [tuple(row[c] for c in cols) for row in pred],
                order_matters,
            ):
                if extend(cols):
                    return True
        return False

    return extend([])


def spider_equal(gold: Sequence[Row], pred: Sequence[Row], order_matters: bool) -> bool:
    """Test-suite denotation equality: bags (or lists) of rows up to column order."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_unordered, pred_unordered = _unordered(gold), _unordered(pred)
    if order_matters:
        if gold_unordered != pred_unordered:
            return False
    elif set(gold_unordered) != set(pred_unordered):
        return False
    return _column_permutation_exists(gold, pred, order_matters)


def bird_equal(gold: Sequence[Row], pred: Sequence[Row]) -> bool:
    """BIRD's EX: the same set of rows."""
    return set(gold) == set(pred)
