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

Results are compared as `ResultForm`s (`kid.sql.sandbox`), digests a worker computes, so
the comparison costs O(1) for most results. Only when both results hold columns with the
same value bag that are not identical does a search over their column permutations run
(pruned by each column's and each prefix's bag of partial rows); it stops after
`MAX_PERMUTATION_WORK` row-steps (cells hashed and counted) with `TooComplex`, scored as
error `too_complex`. Text scanning (`remove_distinct`) is linear in time and memory.

Where kid departs from the official scripts (whose behaviour there is an accident):
a string of several statements is `forbidden` and scores 0 (the test-suite script's
default path silently runs only the first statement, and with --keep_distinct fails);
an empty prediction is a `syntax` error (the official scripts misread or crash on it);
BIRD text is decoded leniently as in Spider (BIRD's script fails on invalid UTF-8).
"""

from __future__ import annotations

import array
import collections
import re
from collections.abc import Sequence

from kid.sql.sandbox import ResultForm, result_form

Row = tuple
MAX_PERMUTATION_WORK = 2_000_000  # row-steps the column-permutation search may take

# Quoted text and comments are skipped; a bare word `distinct` is removed. Possessive
# repeats: no backtracking state per character, so a 10 MB string costs no extra memory.
_QUOTED_OR_DISTINCT = re.compile(
    r"""('[^']*+(?:''[^']*+)*+'?|"[^"]*+(?:""[^"]*+)*+"?|`[^`]*+`?|\[[^\]]*+\]?"""
    r"|--[^\n]*+|/\*.*?(?:\*/|$))"
    r"|\bdistinct\b",
    re.IGNORECASE | re.DOTALL,
)
_CURRENT_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
_SPACED_COMPARISONS = (("> =", ">="), ("< =", "<="), ("! =", "!="))


class TooComplex(Exception):
    """The column-permutation search is over its cap (or its cells were not kept)."""


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


class _Budget:
    """Counts the search's row-steps; TooComplex past the cap."""

    def __init__(self, limit: int):
        self.left = limit

    def charge(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise TooComplex(f"column-permutation search over {MAX_PERMUTATION_WORK} row-steps")


def _unpack(search: tuple) -> tuple[list[int], list[tuple[int, list[int]]]]:
    fixed, loose = search
    return array.array("q", fixed).tolist(), [
        (bag, array.array("q", cells).tolist()) for bag, cells in loose
    ]


def _extend(keys: list[int], column: list[int]) -> list[int]:
    """Row keys with one more column's values folded in."""
    return list(map(hash, zip(keys, column, strict=True)))


def _candidates(gold, pred, budget: _Budget) -> list[list[int]]:
    """For each ambiguous gold column, the pred columns whose (fixed part, value) pairs
    form the same bag: a necessary condition, polynomial, and often decisive."""
    (g_fixed, g_cols), (p_fixed, p_cols) = gold, pred
    budget.charge((len(g_cols) + len(p_cols)) * len(g_fixed))
    g_bags = [collections.Counter(_extend(g_fixed, col)) for _, col in g_cols]
    p_bags = [collections.Counter(_extend(p_fixed, col)) for _, col in p_cols]
    out = []
    for (g_group, _), g_bag in zip(g_cols, g_bags, strict=True):
        out.append([])
        for j, ((p_group, _), p_bag) in enumerate(zip(p_cols, p_bags, strict=True)):
            if p_group == g_group:
                budget.charge(len(g_fixed))
                if p_bag == g_bag:
                    out[-1].append(j)
    return out


def _permutation_exists(gold_search: tuple, pred_search: tuple, limit: int) -> bool:
    """Depth-first over the ambiguous gold columns, fewest candidates first; a partial
    assignment survives only if its bag of partial rows equals gold's."""
    gold, pred = _unpack(gold_search), _unpack(pred_search)
    (g_fixed, g_cols), (p_fixed, p_cols) = gold, pred
    if sorted(b for b, _ in g_cols) != sorted(b for b, _ in p_cols):
        return False
    budget = _Budget(limit)
    candidates = _candidates(gold, pred, budget)
    if not all(candidates):
        return False
    order = sorted(range(len(g_cols)), key=lambda i: len(candidates[i]))
    g_bags = [collections.Counter(g_fixed)]
    keys = g_fixed
    for i in order:
        budget.charge(len(keys))
        keys = _extend(keys, g_cols[i][1])
        g_bags.append(collections.Counter(keys))
    chosen: list[int] = []
    p_keys, resume = [p_fixed], [0]  # per depth: pred row keys, next candidate to try
    while len(chosen) < len(order):
        depth = len(chosen)
        options = candidates[order[depth]]
        while resume[depth] < len(options):
            j = options[resume[depth]]
            resume[depth] += 1
            if j in chosen:
                continue
            budget.charge(len(p_fixed))
            keys = _extend(p_keys[depth], p_cols[j][1])
            if collections.Counter(keys) == g_bags[depth + 1]:
                chosen.append(j)
                p_keys.append(keys)
                resume.append(0)
                break
        else:
            if not chosen:
                return False
            chosen.pop()
            p_keys.pop()
            resume.pop()
    return True


def forms_equal(
    gold: ResultForm,
    pred: ResultForm,
    order_matters: bool,
    *,
    limit: int = MAX_PERMUTATION_WORK,
) -> bool:
    """Test-suite denotation equality on forms: bags (or lists) of rows up to column
    order, after the evaluator's quick test; TooComplex when the search is over `limit`."""
    if gold.nrows == 0 and pred.nrows == 0:
        return True
    if (gold.nrows, gold.ncols) != (pred.nrows, pred.ncols):
        return False
    if gold.bird_rows is None or pred.bird_rows is None:
        raise ValueError("a shape-only form was compared with one of its own shape")
    if order_matters:
        return (gold.ordered_quick, gold.ordered_columns) == (
            pred.ordered_quick,
            pred.ordered_columns,
        )
    if (gold.set_quick, gold.bag_columns) != (pred.set_quick, pred.bag_columns):
        return False
    if gold.bag_rows is not None or pred.bag_rows is not None:
        return gold.bag_rows == pred.bag_rows  # identical columns map only to such ones
    if gold.search is None or pred.search is None:
        raise TooComplex("too many ambiguous cells to search column permutations")
    return _permutation_exists(gold.search, pred.search, limit)


def bird_forms_equal(gold: ResultForm, pred: ResultForm) -> bool:
    """BIRD's EX on forms: the same set of rows."""
    if gold.bird_rows is None or pred.bird_rows is None:
        raise ValueError("BIRD's EX needs full forms, not shape-only ones")
    return gold.bird_rows == pred.bird_rows


def spider_equal(gold: Sequence[Row], pred: Sequence[Row], order_matters: bool) -> bool:
    """Test-suite denotation equality: bags (or lists) of rows up to column order."""
    return forms_equal(result_form(gold), result_form(pred), order_matters)


def bird_equal(gold: Sequence[Row], pred: Sequence[Row]) -> bool:
    """BIRD's EX: the same set of rows."""
    return bird_forms_equal(result_form(gold), result_form(pred))
