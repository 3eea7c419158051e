"""Hostile and real-world input to the kid.data readers (issue 12, items 3 and 4).

tables.json entries with wrong types, the pre-2020 Spider formula_1 / scholar layout,
duplicate db_ids, db_ids that would leave the database folder, FIFOs at data paths, and
json files that break Python's reader. Every corpus is built in the test.
"""

import copy
import json
import os
import sqlite3
import threading

import pytest

from kid.data import jsonio, spider
from kid.data import schema as schema_lib
from kid.data import values as values_lib


def _entry(db_id="shop"):
    """A valid Spider entry: Item(id, Name, price), Sale(id, item_id -> Item.id)."""
    return {
        "db_id": db_id,
        "table_names": ["item", "sale"],
        "table_names_original": ["Item", "Sale"],
        "column_names": [
            [-1, "*"],
            [0, "id"],
            [0, "name"],
            [0, "price"],
            [1, "id"],
            [1, "item id"],
        ],
        "column_names_original": [
            [-1, "*"],
            [0, "id"],
            [0, "Name"],
            [0, "price"],
            [1, "id"],
            [1, "item_id"],
        ],
        "column_types": ["text", "number", "text", "number", "number", "number"],
        "primary_keys": [1, 4],
        "foreign_keys": [[5, 1]],
    }


def _write(path, value):
    path.write_text(json.dumps(value))
    return path


def test_pre_2020_formula_1_layout_reads_as_the_official_evaluator(tmp_path):
    """Natural names listed in another table order (pre-2020 formula_1 / scholar): the
    originals give tables, columns and the key index space; natural names follow them."""
    entry = _entry("formula_1")
    entry["table_names"] = ["sale", "item"]  # the natural lists in another table order
    entry["column_names"] = [
        [-1, "*"],
        [0, "id"],
        [0, "item id"],
        [1, "id"],
        [1, "name"],
        [1, "price"],
    ]
    path = _write(tmp_path / "tables.json", [entry, _entry("other")])
    schema = schema_lib.load_tables(path)["formula_1"]  # not rejected
    assert [t.original for t in schema.tables] == ["Item", "Sale"]
    assert [t.name for t in schema.tables] == ["item", "sale"]
    assert [(c.table, c.original, c.name) for c in schema.columns[1:]] == [
        (0, "id", "id"),
        (0, "Name", "name"),
        (0, "price", "price"),
        (1, "id", "id"),
        (1, "item_id", "item id"),
    ]
    assert [schema.qualified(k) for k in schema.primary_keys] == ["Item.id", "Sale.id"]
    assert [(schema.qualified(a), schema.qualified(b)) for a, b in schema.foreign_keys] == [
        ("Sale.item_id", "Item.id")
    ]
    (note,) = schema_lib.read_tables(path).problems
    assert not note.refused and note.db_id == "formula_1" and "column_names" in note.message


def _bad(field, value):
    def change(entry):
        entry[field] = value

    return change


def _bad_column(field, i, value):
    def change(entry):
        entry[field][i] = value

    return change


WRONG = {
    "db_id int": ("db_id", _bad("db_id", 5)),
    "db_id ../x": ("db_id", _bad("db_id", "../x")),
    "db_id /abs": ("db_id", _bad("db_id", "/abs")),
    "db_id a/b": ("db_id", _bad("db_id", "a/b")),
    "db_id empty": ("db_id", _bad("db_id", "")),
    "table names a string": ("table_names_original", _bad("table_names_original", "ItemSale")),
    "table name an int": ("table_names_original", _bad("table_names_original", ["Item", 3])),
    "natural table names a string": ("table_names", _bad("table_names", "item")),
    "columns a string": ("column_names_original", _bad("column_names_original", "id,Name")),
    "float table index": (
        "column_names_original",
        _bad_column("column_names_original", 1, [0.0, "id"]),
    ),
    "bool table index": (
        "column_names_original",
        _bad_column("column_names_original", 1, [False, "id"]),
    ),
    "table index out of range": (
        "column_names_original",
        _bad_column("column_names_original", 2, [7, "Name"]),
    ),
    "second star column": (
        "column_names_original",
        _bad_column("column_names_original", 2, [-1, "Name"]),
    ),
    "column name an int": (
        "column_names_original",
        _bad_column("column_names_original", 2, [0, 7]),
    ),
    "natural column a string": ("column_names", _bad_column("column_names", 2, "name")),
    "types a string": ("column_types", _bad("column_types", "text")),
    "types too short": ("column_types", _bad("column_types", ["text"])),
    "comments of ints": ("column_comments", _bad("column_comments", [1, 2, 3, 4, 5, 6])),
    "primary key 0 (*)": ("primary_keys", _bad("primary_keys", [0, 1])),
    "float primary key": ("primary_keys", _bad("primary_keys", [1.0])),
    "bool primary key": ("primary_keys", _bad("primary_keys", [True])),
    "string primary key": ("primary_keys", _bad("primary_keys", ["1"])),
    "primary keys an int": ("primary_keys", _bad("primary_keys", 1)),
    "composite key with *": ("primary_keys", _bad("primary_keys", [[1, 0]])),
    "foreign key not a pair": ("foreign_keys", _bad("foreign_keys", [[5]])),
    "foreign key flat": ("foreign_keys", _bad("foreign_keys", [5, 1])),
    "float foreign key": ("foreign_keys", _bad("foreign_keys", [[5, 1.0]])),
    "foreign key out of range": ("foreign_keys", _bad("foreign_keys", [[5, 99]])),
    "missing column types": ("column_types", lambda e: e.pop("column_types")),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_type_costs_only_that_database(tmp_path, case):
    field, change = WRONG[case]
    bad = copy.deepcopy(_entry("bad"))
    change(bad)
    path = _write(tmp_path / "tables.json", [_entry("good"), bad])
    tables = schema_lib.read_tables(path)
    assert set(tables.schemas) == {"good"}
    (problem,) = tables.problems
    assert problem.refused and problem.index == 1
    text = str(problem)
    assert str(path) in text and f"'{field}'" in text
    assert f"db_id={bad['db_id'] if isinstance(bad['db_id'], str) else None}" in text
    # The strict reader names the same place.
    with pytest.raises(schema_lib.SchemaError, match=f"'{field}'") as e:
        schema_lib.load_tables(path)
    assert str(path) in str(e.value)


def test_entry_that_is_not_an_object(tmp_path):
    path = _write(tmp_path / "tables.json", [_entry("good"), "shop"])
    (problem,) = schema_lib.read_tables(path).problems
    assert problem.refused and "expected an object" in str(problem) and "[1]" in str(problem)


def test_duplicate_db_ids_are_reported(tmp_path):
    other = _entry("twice")
    other["table_names_original"] = ["Item", "Sales"]
    path = _write(
        tmp_path / "tables.json",
        [_entry("same"), _entry("twice"), _entry("same"), other],
    )
    tables = schema_lib.read_tables(path)
    assert set(tables.schemas) == {"same"}  # identical repeats kept once; a conflict refused
    by_db = {p.db_id: p for p in tables.problems}
    assert not by_db["same"].refused and "duplicate db_id" in by_db["same"].message
    assert by_db["twice"].refused and "differs" in by_db["twice"].message
    assert by_db["twice"].index == 3
    with pytest.raises(schema_lib.SchemaError, match="twice"):
        schema_lib.load_tables(path)


def test_not_a_list_refuses_the_file(tmp_path):
    path = _write(tmp_path / "tables.json", {"db_id": "shop"})
    with pytest.raises(jsonio.DataError, match=r"tables\.json: expected a list"):
        schema_lib.read_tables(path)


@pytest.mark.parametrize("db_id", ["../x", "/abs", "a/b", "", ".", "..", "a\\b", "a\0b", None])
def test_db_ids_that_leave_the_folder_are_refused(tmp_path, db_id):
    with pytest.raises(schema_lib.InvalidDbId) as e:
        schema_lib.db_file(tmp_path, db_id)
    assert isinstance(e.value, ValueError) and e.value.db_id == db_id
    with pytest.raises(schema_lib.InvalidDbId):
        schema_lib.existing_db_file(tmp_path, db_id)
    with pytest.raises(schema_lib.InvalidDbId):
        schema_lib.existing_db_file(None, db_id)  # invalid even without a folder


@pytest.mark.parametrize("db_id", ["../x", "/abs", "a/b"])
def test_split_records_with_such_db_ids_are_malformed(tmp_path, db_id):
    path = _write(tmp_path / "dev.json", [{"db_id": db_id, "question": "q", "query": "SELECT 1"}])
    examples, (problem,) = spider.read_examples(path)
    assert examples == [] and problem.kind == "malformed" and "'db_id'" in problem.message


def _sqlite(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE Item (id INTEGER PRIMARY KEY, Name TEXT)")
    conn.execute("INSERT INTO Item VALUES (1, 'lamp')")
    conn.commit()
    conn.close()


def _finishes(fn, fifo, seconds=10.0):
    """Runs fn in a thread; if it blocks on the FIFO, a writer releases it and the test fails."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except Exception as e:  # noqa: BLE001 - the caller inspects it
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked on the FIFO {fifo}")
    return outcome


def test_fifo_at_a_database_path_does_not_block(tmp_path):
    db_dir = tmp_path / "database"
    fifo = db_dir / "shop" / "shop.sqlite"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    assert _finishes(lambda: schema_lib.existing_db_file(db_dir, "shop"), fifo) == {"value": None}
    error = _finishes(lambda: schema_lib.connect_read_only(fifo), fifo)["error"]
    assert isinstance(error, sqlite3.OperationalError) and "regular file" in str(error)
    error = _finishes(lambda: schema_lib.schema_from_sqlite(fifo), fifo)["error"]
    assert isinstance(error, schema_lib.SchemaError)
    store = values_lib.ValueStore({}, db_dir, values_lib.ValueOptions())
    assert _finishes(lambda: store.get("shop"), fifo) == {"value": None}
    _write(tmp_path / "dev.json", [{"db_id": "shop", "question": "q", "query": "SELECT 1"}])
    data = _finishes(lambda: spider.load_dataset(tmp_path / "dev.json"), fifo)["value"]
    assert data.missing_databases == {"shop": 1}


def test_fifo_or_folder_at_a_json_path_is_refused(tmp_path):
    fifo = tmp_path / "tables.json"
    os.mkfifo(fifo)
    error = _finishes(lambda: schema_lib.read_tables(fifo), fifo)["error"]
    assert isinstance(error, jsonio.DataError) and "not a regular file" in str(error)
    (tmp_path / "dev.json").mkdir()
    with pytest.raises(jsonio.DataError, match=r"dev\.json: not a regular file"):
        spider.read_examples(tmp_path / "dev.json")


def test_unreadable_database_without_entry_costs_its_examples(tmp_path):
    _sqlite(tmp_path / "database" / "shop" / "shop.sqlite")
    broken = tmp_path / "database" / "broken" / "broken.sqlite"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"this is not a sqlite file" * 100)
    records = [{"db_id": d, "question": "q", "query": "SELECT 1"} for d in ("shop", "broken")]
    _write(tmp_path / "dev.json", records)
    data = spider.load_dataset(tmp_path / "dev.json")  # no tables.json: schemas from sqlite
    assert set(data.schemas) == {"shop"}
    (problem,) = data.problems
    assert (problem.kind, problem.index) == ("unreadable_database", 1)
    assert "broken" in problem.message and "1 examples on unreadable" in data.summary()


def test_refused_entries_are_dataset_problems(tmp_path):
    _sqlite(tmp_path / "database" / "shop" / "shop.sqlite")
    bad = _entry("shop")
    bad["primary_keys"] = [0]
    _write(tmp_path / "tables.json", [bad])
    _write(tmp_path / "dev.json", [{"db_id": "shop", "question": "q", "query": "SELECT 1"}])
    data = spider.load_dataset(tmp_path / "dev.json")
    (problem,) = data.problems
    assert problem.kind == "schema" and "'primary_keys'" in problem.message
    # The refused entry costs its tables.json schema only: the sqlite file gives one.
    assert [t.original for t in data.schemas["shop"].tables] == ["Item"]


def test_json_recursion_bomb_names_the_file(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text("[\n" + "[" * 200_000)
    with pytest.raises(jsonio.DataError, match=r"dev\.json: JSON nested too deeply.*line 2"):
        spider.read_examples(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[\n{"db_id": "a",\n "question": }\n]', r"invalid JSON at line 3"),
        ("[" + "1" * 5000 + "]", r"invalid JSON: .*digits"),
        ('[\n"caf\xe9"]', r"invalid UTF-8 at line 2"),
    ],
)
def test_invalid_json_names_the_file(tmp_path, text, message):
    path = tmp_path / "tables.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(jsonio.DataError, match=r"tables\.json: " + message):
        schema_lib.read_tables(path)


def test_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "tables.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([_entry()]).encode())
    assert set(schema_lib.load_tables(path)) == {"shop"}


@pytest.mark.parametrize("evidence", [0, 1.5, False, ["x"], {"a": 1}])
def test_non_string_evidence_is_malformed(tmp_path, evidence):
    record = {"db_id": "a", "question": "q", "SQL": "SELECT 1", "evidence": evidence}
    path = _write(tmp_path / "dev.json", [record, {**record, "evidence": None}])
    examples, (problem,) = spider.read_examples(path)
    assert problem.index == 0 and "'evidence'" in problem.message
    assert [e.evidence for e in examples] == [""]  # null evidence is no evidence


def _pre_2020(entry, order):
    """`entry` with its natural lists in the table order `order` (original table indices),
    as the pre-2020 Spider tables.json lists formula_1 (circuits moved to position 10)."""
    old = copy.deepcopy(entry)
    old["table_names"] = [entry["table_names"][t] for t in order]
    by_table = {t: [n for tt, n in entry["column_names"] if tt == t] for t in order}
    old["column_names"] = [[-1, "*"]] + [
        [new, n] for new, t in enumerate(order) for n in by_table[t]
    ]
    return old


def test_spider_dk_style_tables_json_reads(spider_dir, tmp_path):
    """Spider's tables.json with formula_1 and scholar put back in their pre-2020 layout,
    as Spider-DK and the test-suite evaluator ship them: every entry reads, originals and
    keys unchanged."""
    entries = json.loads((spider_dir / "tables.json").read_text())
    current = schema_lib.load_tables(spider_dir / "tables.json")
    for i, e in enumerate(entries):
        n = len(e["table_names"])
        if e["db_id"] == "formula_1":
            entries[i] = _pre_2020(e, [*range(1, 11), 0, 11, 12])
        elif e["db_id"] == "scholar":
            entries[i] = _pre_2020(e, [*range(1, n), 0])
    path = _write(tmp_path / "tables.json", entries)
    tables = schema_lib.read_tables(path)
    assert sorted(p.db_id for p in tables.problems) == ["formula_1", "scholar"]
    assert not any(p.refused for p in tables.problems)
    for db_id in ("formula_1", "scholar"):
        old, new = tables.schemas[db_id], current[db_id]
        assert old.lowercase_names() == new.lowercase_names()
        assert (old.primary_keys, old.foreign_keys) == (new.primary_keys, new.foreign_keys)
        assert [c.type for c in old.columns] == [c.type for c in new.columns]
    assert (
        tables.schemas["formula_1"].columns[1].name == "circuit id"
    )  # derived, as Spider spells it
    assert {k: v for k, v in tables.schemas.items() if k not in ("formula_1", "scholar")} == {
        k: v for k, v in current.items() if k not in ("formula_1", "scholar")
    }


def test_real_spider_dk_tables_json():
    """The real Spider-DK tables.json, where one is present (KID_SPIDER_DK_DIR)."""
    folder = os.environ.get("KID_SPIDER_DK_DIR", "")
    if not os.path.exists(os.path.join(folder, "tables.json")):
        pytest.skip("Spider-DK not found: set KID_SPIDER_DK_DIR to its folder")
    tables = schema_lib.read_tables(os.path.join(folder, "tables.json"))
    assert not [p for p in tables.problems if p.refused]
    assert {"formula_1", "scholar", "new_concert_singer", "new_orchestra", "new_pets_1"} <= set(
        tables.schemas
    )
