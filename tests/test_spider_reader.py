import json
import sqlite3

import pytest

from kid.data import spider


def test_dev_loads_with_missing_wta_1_reported(spider_dir):
    data = spider.load_dataset(spider_dir / "dev.json")
    assert len(data.examples) == 1034
    assert data.missing_databases == {"wta_1": 62}
    assert all(p.kind == "missing_database" for p in data.problems)
    assert data.db_path("wta_1") is None
    assert data.db_path("concert_singer").endswith("concert_singer/concert_singer.sqlite")
    assert "62 examples on missing database wta_1" in data.summary()
    # wta_1 has no sqlite file but its schema still comes from tables.json.
    assert "wta_1" in data.schemas


def test_train_loads_with_missing_databases_reported(spider_dir):
    data = spider.load_dataset(spider_dir / "train_spider.json")
    assert len(data.examples) == 7000
    assert set(data.missing_databases) == {"baseball_1", "soccer_1"}
    first = data.examples[0]
    assert (first.db_id, first.index) == ("department_management", 0)
    assert first.query == "SELECT count(*) FROM head WHERE age  >  56"


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_malformed_records_are_reported_with_file_and_index(tmp_path):
    path = _write(
        tmp_path / "dev.json",
        [
            {"db_id": "a", "question": "q0", "query": "SELECT 1"},
            {"db_id": "a", "question": "q1"},
            "not an object",
            {"db_id": "a", "question": "q3", "query": 7},
        ],
    )
    examples, problems = spider.read_examples(path)
    assert [e.index for e in examples] == [0]
    assert [(p.index, p.kind) for p in problems] == [
        (1, "malformed"),
        (2, "malformed"),
        (3, "malformed"),
    ]
    assert str(path) in str(problems[0]) and "[1]" in str(problems[0])
    assert "'query'" in problems[0].message
    with pytest.raises(spider.DataError, match=r"dev\.json\[1\]: field 'query'"):
        spider.read_examples(path, strict=True)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n{"db_id": "a",\n "question": }\n]')
    with pytest.raises(spider.DataError, match=r"train\.json: invalid JSON at line 3"):
        spider.read_examples(path)


def test_spider_syn_question_field(tmp_path):
    path = _write(
        tmp_path / "dev.json",
        [
            {
                "db_id": "a",
                "question": "original",
                "SpiderSynQuestion": "synonym",
                "query": "SELECT 1",
            }
        ],
    )
    (example,), _ = spider.read_examples(path)
    assert example.question == "synonym"


def test_bird_layout(tmp_path):
    bird = tmp_path / "dev"
    (bird / "dev_databases" / "shop").mkdir(parents=True)
    conn = sqlite3.connect(bird / "dev_databases" / "shop" / "shop.sqlite")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, price REAL)")
    conn.commit()
    conn.close()
    _write(
        bird / "dev.json",
        [
            {
                "question_id": 0,
                "db_id": "shop",
                "question": "Cheapest item?",
                "evidence": "cheapest refers to MIN(price)",
                "SQL": "SELECT min(price) FROM item",
            },
            {"question_id": 1, "db_id": "gone", "question": "q", "evidence": "", "SQL": "SELECT 1"},
        ],
    )
    _write(
        bird / "dev_tables.json",
        [
            {
                "db_id": "shop",
                "table_names": ["item"],
                "table_names_original": ["item"],
                "column_names": [[-1, "*"], [0, "id"], [0, "price"]],
                "column_names_original": [[-1, "*"], [0, "id"], [0, "price"]],
                "column_types": ["text", "number", "number"],
                "primary_keys": [1],
                "foreign_keys": [],
            }
        ],
    )
    data = spider.load_dataset(bird / "dev.json")
    assert data.examples[0].evidence == "cheapest refers to MIN(price)"
    assert data.examples[0].query == "SELECT min(price) FROM item"
    assert data.db_path("shop") is not None
    assert data.missing_databases == {"gone": 1}
    assert set(data.schemas) == {"shop"}


def test_spider_test_release_layout(tmp_path):
    """Spider's test release keeps test.json beside test_tables.json and test_database/."""
    (tmp_path / "test_database").mkdir()
    (tmp_path / "test_tables.json").write_text("[]")
    tables, db_dir = spider.layout_for(tmp_path / "test.json")
    assert (tables, db_dir) == (str(tmp_path / "test_tables.json"), str(tmp_path / "test_database"))
    assert spider.layout_for(tmp_path / "dev.json") == (
        str(tmp_path / "tables.json"),
        str(tmp_path / "database"),
    )
