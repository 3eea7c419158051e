import json
import shutil

import pytest

from kid.data import pipeline, spider, tfds_spider


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory, spider_dir):
    """A small Spider-format folder: split subsets, tables.json, the real databases, and one
    dev example on a database that exists nowhere."""
    d = tmp_path_factory.mktemp("manual")
    ghost = {"db_id": "ghost", "question": "How many?", "query": "SELECT count(*) FROM t"}
    for name, n, extra in (("dev.json", 40, [ghost]), ("train_spider.json", 30, [])):
        records = json.loads((spider_dir / name).read_text())[:n] + extra
        (d / name).write_text(json.dumps(records))
    shutil.copy(spider_dir / "tables.json", d / "tables.json")
    (d / "database").symlink_to(spider_dir / "database")
    return d


def _fields(e):
    return (e.db_id, e.question, e.query, e.evidence, e.index)


def test_round_trip_through_array_record(manual_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    got = tfds_spider.load_examples(manual_dir, "validation", data_dir=str(data_dir))
    expected, _ = spider.read_examples(manual_dir / "dev.json")
    assert [_fields(e) for e in got] == [_fields(e) for e in expected]  # file order kept
    assert {e.source for e in got} == {"dev.json"}
    train = tfds_spider.load_examples(manual_dir, "train", data_dir=str(data_dir))
    assert len(train) == 30  # train_others.json is absent: skipped
    records = sorted(data_dir.glob("spider_format/spider/1.0.0/*.array_record*"))
    assert [p.name.split(".")[0] for p in records] == [
        "spider_format-train",
        "spider_format-validation",
    ]
    stamp = [p.stat().st_mtime_ns for p in records]
    tfds_spider.load_examples(manual_dir, "validation", data_dir=str(data_dir))
    assert [p.stat().st_mtime_ns for p in records] == stamp  # prepared once, then reused


def test_pipeline_reads_the_tfds_source(manual_dir, tmp_path):
    config = pipeline.default_config()
    config.update(
        dict(dir=str(manual_dir), source="tfds", eval="validation", tfds_data_dir=str(tmp_path))
    )
    from_tfds = pipeline.load_split(config, config.eval)
    config.source = "json"
    from_json = pipeline.load_split(config, "dev.json")
    assert [_fields(e) for e in from_tfds.examples] == [_fields(e) for e in from_json.examples]
    assert from_tfds.schemas == from_json.schemas and from_tfds.db_dir == from_json.db_dir
    assert from_tfds.missing_databases == from_json.missing_databases == {"ghost": 1}


def test_no_split_files_is_an_error(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "tables.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="none of"):
        tfds_spider.load_examples(tmp_path / "manual", "train", data_dir=str(tmp_path / "tfds"))
