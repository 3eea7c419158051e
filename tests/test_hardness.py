import collections
import concurrent.futures
import json

import pytest

from kid.sql import hardness, spider_parse


def test_spider_dev_official_counts(spider_dir):
    dev = json.loads((spider_dir / "dev.json").read_text())
    counts = collections.Counter(hardness.hardness(e["query"]) for e in dev)
    assert counts == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}


def test_agrees_with_official_labels_on_train_sample(spider_dir):
    rows = [
        json.loads(line)
        for line in (spider_dir / "official_verdicts" / "verdicts.jsonl").read_text().splitlines()
    ]
    wrong = [r["idx"] for r in rows if hardness.hardness(r["gold"]) != r["hardness"]]
    assert wrong == []


@pytest.mark.parametrize(
    "query, c1, c2, others, level",
    [
        ("SELECT name FROM singer", 0, 0, 0, "easy"),
        ("SELECT count(*) FROM singer WHERE age > 20", 1, 0, 0, "easy"),
        ("SELECT name, age FROM singer ORDER BY age DESC LIMIT 1", 2, 0, 1, "medium"),
        (
            "SELECT T1.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T2.x LIKE '%y%' OR T2.z = 1",
            4,
            0,
            1,
            "extra",
        ),
        ("SELECT name FROM a WHERE id IN (SELECT id FROM b)", 1, 1, 0, "hard"),
        ("SELECT name FROM a INTERSECT SELECT name FROM b", 0, 1, 0, "hard"),
        ("SELECT x FROM a GROUP BY x HAVING count(*) > 1 AND sum(y) < 3", 1, 0, 0, "easy"),
        ("SELECT x FROM a WHERE y NOT IN (SELECT y FROM b) AND z NOT LIKE 'q'", 2, 1, 2, "extra"),
    ],
)
def test_component_counts(query, c1, c2, others, level):
    sql = spider_parse.parse(query)
    assert (hardness.component1(sql), hardness.component2(sql), hardness.others(sql)) == (
        c1,
        c2,
        others,
    )
    assert hardness.level(sql) == level


def test_unparseable_query_raises():
    with pytest.raises(spider_parse.SpiderParseError):
        hardness.hardness("SELECT name singer WHERE")


def test_tokenize_is_thread_safe(spider_dir):
    queries = [
        line.split("\t")[0]
        for line in (spider_dir / "train_gold.sql").read_text().splitlines()[:2000]
    ]
    expected = [spider_parse.tokenize(q) for q in queries]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(spider_parse.tokenize, queries)) == expected
