import json
import sqlite3

import pytest

from kid.data import schema as schema_lib


def test_tables_json_fields(spider_tables):
    assert len(spider_tables) == 166
    s = spider_tables["concert_singer"]
    assert [t.original for t in s.tables] == ["stadium", "singer", "concert", "singer_in_concert"]
    assert s.columns[0].original == "*" and s.columns[0].table == -1
    assert s.qualified(1) == "stadium.Stadium_ID"
    assert s.columns[1].name == "stadium id" and s.columns[1].type == "number"
    assert [s.qualified(k) for k in s.primary_keys][:2] == [
        "stadium.Stadium_ID",
        "singer.Singer_ID",
    ]
    assert ("concert.Stadium_ID", "stadium.Stadium_ID") in {
        (s.qualified(a), s.qualified(b)) for a, b in s.foreign_keys
    }


@pytest.mark.parametrize("db_id", ["concert_singer", "pets_1", "car_1", "world_1"])
def test_sqlite_fallback_agrees_with_tables_json(spider_dir, spider_tables, db_id):
    expected = spider_tables[db_id]
    found = schema_lib.schema_from_sqlite(spider_dir / "database" / db_id / f"{db_id}.sqlite")
    assert found.db_id == db_id
    assert found.lowercase_names() == expected.lowercase_names()
    # tables.json lists one key column where sqlite may declare a composite key.
    pk = {found.qualified(k).lower() for k in found.primary_keys}
    assert {expected.qualified(k).lower() for k in expected.primary_keys} <= pk

    def fk(s):
        return {(s.qualified(a).lower(), s.qualified(b).lower()) for a, b in s.foreign_keys}

    assert fk(found) == fk(expected)


def test_bad_entry_names_the_field(tmp_path):
    path = tmp_path / "tables.json"
    path.write_text(json.dumps([{"db_id": "x", "table_names": []}]))
    with pytest.raises(schema_lib.SchemaError, match=r"tables\.json\[0\].*'table_names_original'"):
        schema_lib.load_tables(path)


def test_missing_sqlite_file(tmp_path):
    with pytest.raises(schema_lib.SchemaError, match="not found"):
        schema_lib.schema_from_sqlite(tmp_path / "nope.sqlite")


@pytest.mark.parametrize("folder", ["a#b", "a?b", "a%20b", "a b"])
def test_sqlite_fallback_opens_read_only_in_any_folder(spider_dir, tmp_path, folder):
    """URI characters in the path must neither cut off mode=ro nor open another file."""
    db = tmp_path / folder / "pets_1.sqlite"
    db.parent.mkdir()
    db.write_bytes((spider_dir / "database/pets_1/pets_1.sqlite").read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    schema = schema_lib.schema_from_sqlite(db)
    assert [t.original for t in schema.tables] == ["Student", "Has_Pet", "Pets"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with schema_lib.connect_read_only(db) as conn:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE t (x)")


def test_reading_a_wal_database_leaves_no_side_files(tmp_path):
    path = tmp_path / "w.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert before[18:20] == b"\x02\x02" and sorted(p.name for p in tmp_path.iterdir()) == [
        "w.sqlite"
    ]
    schema = schema_lib.schema_from_sqlite(path, "w")
    assert schema.lowercase_names() == {"t": ["id", "name"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.sqlite"]
    assert path.read_bytes() == before
