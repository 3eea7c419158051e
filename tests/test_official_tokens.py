"""kid's Spider parse follows the official evaluator's tokenizer and stays bounded.

The expected verdicts are the official ones, worked out from `process_sql.tokenize`
(quotes -> placeholders, nltk's word tokenizer, `!=` / `>=` / `<=` rejoined) and its
grammar: a prediction it cannot parse is scored as the empty query, EM 0.
"""

import time
import tracemalloc

import pytest

from kid.sql import exact_match, hardness, spider_parse
from kid.sql.spider_parse import MAX_DEPTH, MAX_QUERY_CHARS, TooDeep, TooLong

GOLD_EQ = "SELECT name FROM singer WHERE age = 32"
GOLD_GE = "SELECT name FROM singer WHERE age >= 32"
GOLD_JOIN = (
    "SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id"
)
GOLD_LIKE = "SELECT name FROM singer WHERE name LIKE '%a%'"
GOLD_STRING = "SELECT age FROM singer WHERE name = 'Joe'"
GOLD_LIMIT = "SELECT name FROM singer ORDER BY age LIMIT 1"


@pytest.mark.parametrize(
    "query, tokens",
    [
        ("WHERE age=32", ["where", "age=32"]),  # `=` is never split off
        ("ON T1.id=T2.id", ["on", "t1.id=t2.id"]),
        ("age>=32", ["age", ">", "=32"]),  # `>` is; `=` stays on the number
        ("age>= 32", ["age", ">=", "32"]),  # ... and rejoins when it stands alone
        ("age!=32", ["age", "!", "=32"]),
        ("age<32", ["age", "<", "32"]),
        ("SELECT `name`", ["select", "`", "name", "`"]),
        ("SELECT [name]", ["select", "[", "name", "]"]),
        ("a -- note", ["a", "--", "note"]),
        ("a /* note */", ["a", "/", "*", "note", "*", "/"]),
        ("name LIKE'%a%'", ["name", "like__val_9_13__"]),  # the placeholder is glued on
        ("name = 'Joe'", ["name", "=", '"Joe"']),  # values keep their case
        ('name = "Joe" OR x', ["name", "=", '"Joe"', "or", "x"]),
        ("'it''s'", ["__val_0_3____val_4_6__"]),  # SQL's escaped quote: two glued values
        ("T1 . name", ["t1", ".", "name"]),  # dots are not joined ...
        ("T1.name", ["t1.name"]),
        ("LIMIT 1.", ["limit", "1", "."]),  # ... but a final period is split off
        ("count(*)", ["count", "(", "*", ")"]),
        ("IN (1,2)", ["in", "(", "1,2", ")"]),  # a comma before a digit stays
        ("x, y", ["x", ",", "y"]),
        ("x > -5", ["x", ">", "-5"]),
        ("cannot", ["can", "not"]),  # nltk's contractions
    ],
)
def test_tokens_are_the_official_ones(query, tokens):
    assert spider_parse.tokenize(query) == tokens


@pytest.mark.parametrize(
    "query", ['WHERE name = "O\'Brien"', "WHERE name = 'Joe", "WHERE a = 'x' AND b = \"y"]
)
def test_unbalanced_quotes_do_not_tokenize(query):
    """`'` is read as `"`: an apostrophe in a double-quoted string leaves an odd count,
    which fails the official tokenizer's assertion."""
    with pytest.raises(spider_parse.SpiderParseError, match="quotes"):
        spider_parse.tokenize(query)


@pytest.mark.parametrize(
    "gold, pred, official",
    [
        (GOLD_EQ, "SELECT name FROM singer WHERE age=32", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age =32", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age= 32", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age = 32", 1),
        (GOLD_GE, "SELECT name FROM singer WHERE age>=32", 0),
        (GOLD_GE, "SELECT name FROM singer WHERE age >=32", 0),
        (GOLD_GE, "SELECT name FROM singer WHERE age>= 32", 1),
        (GOLD_GE, "SELECT name FROM singer WHERE age >= 32", 1),
        (GOLD_JOIN, GOLD_JOIN.replace("T1.singer_id = T2.singer_id", "T1.singer_id=T2.singer_id"), 0),
        (GOLD_EQ, "SELECT `name` FROM singer WHERE age = 32", 0),
        (GOLD_EQ, "SELECT name FROM `singer` WHERE age = 32", 0),
        (GOLD_EQ, "SELECT [name] FROM singer WHERE age = 32", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age = 32 -- adults", 0),
        (GOLD_EQ, "-- adults\nSELECT name FROM singer WHERE age = 32", 0),
        (GOLD_EQ, "SELECT name /* who */ FROM singer WHERE age = 32", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age = 32 /* adults */", 0),
        (GOLD_LIMIT, GOLD_LIMIT + " -- the youngest", 1),  # after the last clause: ignored
        (GOLD_LIMIT, GOLD_LIMIT + " /* the youngest */", 1),
        (GOLD_LIKE, "SELECT name FROM singer WHERE name LIKE'%a%'", 0),
        (GOLD_LIKE, "SELECT name FROM singer WHERE name LIKE '%b%'", 1),
        (GOLD_STRING, "SELECT age FROM singer WHERE name = \"O'Brien\"", 0),
        (GOLD_STRING, "SELECT age FROM singer WHERE name = 'O''Brien'", 0),
        (GOLD_STRING, "SELECT age FROM singer WHERE name = \"Joe\"", 1),
        (GOLD_STRING, "SELECT age FROM singer AS T1 WHERE T1 . name = 'Joe'", 0),
        (GOLD_EQ, "SELECT name FROM singer WHERE age != 32", 0),  # another operator
        (GOLD_EQ, "SELECT name FROM singer WHERE age!=32", 0),
    ],
)  # fmt: skip
def test_exact_match_follows_the_official_tokenizer(spider_tables, gold, pred, official):
    assert exact_match.exact_match(gold, pred, spider_tables["concert_singer"]) == official


@pytest.mark.parametrize(
    "query",
    [
        "SELECT max(age) - min(age) FROM singer",  # `-` after an aggregate: no column
        "SELECT max(age)-min(age) FROM singer",
        "SELECT name FROM singer WHERE age=32",
        "SELECT `name` FROM singer",
        "SELECT name FROM singer -- all",
        "SELECT name FROM FROM singer",
        "SELECT count FROM singer",  # an aggregate's name is no bare column
        "SELECT T1.a.b FROM singer AS T1",
    ],
)
def test_hardness_refuses_what_the_official_parser_rejects(query):
    with pytest.raises(spider_parse.SpiderParseError):
        hardness.hardness(query)


def test_hardness_keeps_names_a_schema_can_hold():
    assert hardness.hardness("SELECT T1.count, 18_49_rating_share FROM checkin AS T1") == "medium"
    assert hardness.hardness("SELECT T1.a - T1.b FROM t AS T1") == "easy"


def _nested_in(depth: int) -> str:
    return "SELECT a FROM t WHERE a IN (" * (depth - 1) + "SELECT a FROM t" + ")" * (depth - 1)


def _unions(n: int) -> str:
    return " UNION ".join(["SELECT a FROM t"] * (n + 1))


def _fast(fn, *args, limit_s: float = 1.0):
    start = time.perf_counter()
    out = fn(*args)
    assert time.perf_counter() - start < limit_s
    return out


@pytest.mark.parametrize("query", [_nested_in(300), _unions(1000)])
def test_deep_queries_are_refused_fast_and_typed(query):
    with pytest.raises(TooDeep) as caught:
        _fast(spider_parse.parse, query)
    assert isinstance(caught.value, spider_parse.SpiderParseError)
    with pytest.raises(TooDeep):
        _fast(hardness.hardness, query)


def test_depth_limit_is_exact():
    spider_parse.parse(_nested_in(MAX_DEPTH))
    spider_parse.parse(_unions(MAX_DEPTH - 1))
    with pytest.raises(TooDeep):
        spider_parse.parse(_nested_in(MAX_DEPTH + 1))
    with pytest.raises(TooDeep):
        spider_parse.parse(_unions(MAX_DEPTH))
    spider_parse.parse(_nested_in(8), max_depth=8)
    with pytest.raises(TooDeep):
        spider_parse.parse(_nested_in(9), max_depth=8)


def _in_list(chars: int) -> str:
    head = "SELECT name FROM singer WHERE age IN ("
    items = ", ".join(str(i) for i in range(chars // 7))
    return (head + items)[: chars - 1] + ")"


def test_long_query_is_refused_before_any_work():
    query = _in_list(5_000_000)
    with pytest.raises(TooLong) as caught:
        _fast(spider_parse.parse, query, limit_s=0.1)
    assert isinstance(caught.value, spider_parse.SpiderParseError)
    with pytest.raises(TooLong):
        spider_parse.parse("SELECT a FROM t", max_chars=10)


@pytest.mark.parametrize("deep", [False, True])
def test_exact_match_scores_an_over_limit_prediction_as_empty(spider_tables, deep):
    pred = _nested_in(300) if deep else _in_list(5_000_000)
    gold = "SELECT name FROM singer WHERE age IN (SELECT age FROM singer)"
    assert _fast(exact_match.exact_match, gold, pred, spider_tables["concert_singer"]) == 0


def test_parse_under_the_limit_is_fast_and_small():
    """Work and memory grow linearly: the longest query allowed costs a fraction of a
    second and a few MB (about 0.25 s on one core)."""
    flat = "SELECT " + ", ".join(["name"] * (MAX_QUERY_CHARS // 6 - 4)) + " FROM singer"
    assert len(flat) <= MAX_QUERY_CHARS
    tracemalloc.start()
    try:
        sql = _fast(spider_parse.parse, flat, limit_s=5.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(sql["select"][1]) == MAX_QUERY_CHARS // 6 - 4
    assert peak < 64 * 2**20
    with pytest.raises(spider_parse.SpiderParseError):
        _fast(spider_parse.parse, _in_list(MAX_QUERY_CHARS))  # the grammar has no IN lists
