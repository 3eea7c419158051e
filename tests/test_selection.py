"""Execution-guided selection among candidates: the rules, and a real-executor fixture where
greedy fails to execute and a later beam is right."""

import sqlite3

import pytest

from kid import selection
from kid.data import schema as schema_lib
from kid.sql import executor as executor_lib
from kid.sql import scoring


@pytest.mark.parametrize(
    "keys, rule, expected",
    [
        ([None, "a", "b"], "first", 0),
        ([None, "a", "b"], "executable", 1),
        ([None, None], "executable", 0),  # nothing executes: keep the best-ranked
        (["a", "b", "b", "a", "b"], "majority", 1),
        (["a", "b", "b", "a"], "majority", 0),  # a tie goes to the key seen first
        ([None, "b", None, "c", "c"], "majority", 3),
        ([None, None, None], "majority", 0),
    ],
)
def test_choose(keys, rule, expected):
    assert selection.choose(keys, rule) == expected


def test_unknown_rule_and_no_candidates_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        selection.choose(["a"], "best-of")
    with pytest.raises(ValueError, match="no candidates"):
        selection.choose([], "first")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("db")
    (db_dir / "shop").mkdir()
    path = db_dir / "shop" / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany(
            "INSERT INTO item VALUES (?, ?, ?)",
            [(1, "pen", 2.5), (2, "book", 12.0), (3, "lamp", 30.0), (4, "mug", 7.0)],
        )
    return db_dir, str(path)


def test_selection_never_scores_below_greedy(shop):
    """Greedy (candidate 0) fails to execute; a later beam is the right query."""
    db_dir, path = shop
    gold = [("SELECT name FROM item WHERE price > 10", "shop")] * 3
    candidates = [
        ["SELECT name FROM item WHERE prize > 10", "SELECT name FROM item WHERE price > 10"],
        # Two of three samples agree on the right result, in another spelling.
        [
            "SELECT name FROM item WHERE price > 8",
            "SELECT name FROM item WHERE price >= 12",
            "SELECT name FROM item",
        ],
        # Nothing executes: every rule keeps the first candidate.
        ["SELEC name", "SELECT nope FROM item"],
    ]
    schemas = {"shop": schema_lib.schema_from_sqlite(path)}
    with (
        executor_lib.Executor(2, timeout=10) as executor,
        scoring.Scorer(db_dir, schemas=schemas, workers=1) as scorer,
    ):
        chosen = {
            rule: selection.select(executor, [path] * 3, candidates, rule)
            for rule in selection.RULES
        }
        ex = {rule: [v.exec for v in scorer.score(gold, sql)] for rule, sql in chosen.items()}
    assert chosen["first"] == [c[0] for c in candidates]
    assert ex["first"] == [0, 1, 0]
    assert chosen["executable"][0] == candidates[0][1] and ex["executable"] == [1, 1, 0]
    assert chosen["majority"][1] == candidates[1][0] and ex["majority"] == [1, 1, 0]
    for rule in selection.RULES:
        assert all(e >= g for e, g in zip(ex[rule], ex["first"], strict=True))
    assert chosen["majority"][2] == chosen["executable"][2] == "SELEC name"


def test_missing_database_and_empty_sql_count_as_not_executing(shop):
    _, path = shop
    with executor_lib.Executor(1, timeout=10) as executor:
        keys = selection.execution_keys(
            executor, [(None, "SELECT 1"), (path, "  "), (path, "SELECT count(*) FROM item")]
        )
    assert keys[:2] == [None, None] and keys[2] is not None


def test_select_needs_an_executor_only_to_execute():
    assert selection.select(None, [None], [["a", "b"]], "first") == ["a"]
    with pytest.raises(ValueError, match="needs an executor"):
        selection.select(None, [None], [["a", "b"]], "majority")
