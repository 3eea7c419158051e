"""EX semantics: query normalisation and denotation equality (kid.sql.exec_match)."""

import collections
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kid.sql import exec_match


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT DISTINCT name FROM t", "SELECT  name FROM t"),
        ("SELECT count(DISTINCT name) FROM t", "SELECT count( name) FROM t"),
        ("select avg(distinct(x)) from t", "select avg((x)) from t"),
        ("SELECT distinct_id FROM t", "SELECT distinct_id FROM t"),
        ("SELECT a FROM t WHERE b = 'distinct'", "SELECT a FROM t WHERE b = 'distinct'"),
        ('SELECT "distinct" FROM t', 'SELECT "distinct" FROM t'),
        ("SELECT `distinct`, [distinct] FROM t", "SELECT `distinct`, [distinct] FROM t"),
        ("SELECT 'it''s distinct' -- distinct\n", "SELECT 'it''s distinct' -- distinct\n"),
        ("SELECT /* distinct */ DISTINCT a", "SELECT /* distinct */  a"),
        ("SELECT 'unterminated DISTINCT", "SELECT 'unterminated DISTINCT"),
    ],
)
def test_remove_distinct(sql, expected):
    assert exec_match.remove_distinct(sql) == expected


def test_spider_queries_rewrites_prediction_only():
    gold, pred, order = exec_match.spider_queries(
        "SELECT attribute_value FROM t WHERE a > = 1", "SELECT attribute_value FROM t ORDER BY x"
    )
    assert gold == "SELECT attribute_value FROM t WHERE a >= 1"
    assert pred == "SELECT attribute_1 FROM t ORDER BY x"
    assert order is False  # only the gold's `order by` counts
    _, pred, _ = exec_match.spider_queries("SELECT 1", "SELECT value", value_rewrite=False)
    assert pred == "SELECT value"


def test_order_matters_is_a_substring_test_on_gold():
    assert exec_match.spider_queries("SELECT a FROM t ORDER BY a", "x")[2]
    assert exec_match.spider_queries("SELECT a FROM t order  by a", "x")[2] is False


def test_keep_distinct_and_current_year():
    gold, _, _ = exec_match.spider_queries(
        "SELECT DISTINCT YEAR(CURDATE()) - y FROM t", "x", keep_distinct=True
    )
    assert gold == "SELECT DISTINCT 2020- y FROM t"


@pytest.mark.parametrize(
    "gold, pred, order_matters, equal",
    [
        ([], [], False, True),
        ([], [(1, 2)], False, False),
        ([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], False, True),  # columns and rows permuted
        ([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], True, False),
        ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True),
        ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),  # bags, not sets
        ([(1,)], [(1.0,)], False, True),
        ([(1, 2)], [(1, 2, 3)], False, False),
        ([("5",)], [(5,)], False, False),
        # Same column multisets, but pairing rows differently.
        ([(1, 1), (2, 2)], [(1, 2), (2, 1)], False, False),
    ],
)
def test_spider_equal(gold, pred, order_matters, equal):
    assert exec_match.spider_equal(gold, pred, order_matters) is equal


def _brute_force_equal(gold, pred, order_matters):
    """The definition: a column permutation under which the rows agree as bags (or lists)."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    key = lambda v: str(v) + str(type(v))  # noqa: E731
    unordered = [[tuple(sorted(r, key=key)) for r in rows] for rows in (gold, pred)]
    if order_matters and unordered[0] != unordered[1]:
        return False
    if not order_matters and set(unordered[0]) != set(unordered[1]):
        return False
    for perm in itertools.permutations(range(len(gold[0]))):
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if order_matters and permuted == list(gold):
            return True
        if not order_matters and collections.Counter(permuted) == collections.Counter(gold):
            return True
    return False


_values = st.one_of(st.integers(0, 2), st.sampled_from([1.0, 2.5, "a", "1", None]))


@st.composite
def _tables(draw):
    width = draw(st.integers(1, 4))
    gold = draw(st.lists(st.tuples(*[_values] * width), max_size=5))
    mode = draw(st.sampled_from(["permute", "random"]))
    if mode == "random" or not gold:
        pred = draw(st.lists(st.tuples(*[_values] * width), max_size=5))
    else:
        perm = draw(st.permutations(range(width)))
        rows = draw(st.permutations(gold))
        pred = [tuple(row[j] for j in perm) for row in rows]
    return gold, pred


@settings(max_examples=300, deadline=None)
@given(_tables(), st.booleans())
def test_spider_equal_matches_brute_force(tables, order_matters):
    gold, pred = tables
    assert exec_match.spider_equal(gold, pred, order_matters) == _brute_force_equal(
        gold, pred, order_matters
    )


def test_bird_equal_is_set_equality():
    assert exec_match.bird_equal([(1,), (1,), (2,)], [(2,), (1,)])
    assert not exec_match.bird_equal([(1, 2)], [(2, 1)])
