import dataclasses
import hashlib
import sqlite3

import pytest

from kid.data import prompts, spider
from kid.data import values as values_lib


@pytest.fixture(scope="module")
def dev(spider_dir):
    return spider.load_dataset(spider_dir / "dev.json")


def _example(dev, db_id, question):
    return next(e for e in dev.examples if e.db_id == db_id and e.question == question)


def _prompter(dev, style, **kwargs):
    return prompts.Prompter(dev.schemas, dev.db_dir, prompts.PromptOptions(style=style), **kwargs)


CONCERT_2014 = "What are the names of the singers who performed in a concert in 2014?"

# Sample values checked by hand against concert_singer.sqlite (first distinct values in
# table order); matched values: "2014" is a concert year and a song release year.
GOLDEN_CODES = (
    "database schema :\n"
    "table stadium , columns = [ stadium.Stadium_ID ( number | primary key | values : 1 , 2 ) , "
    "stadium.Location ( text | values : Raith Rovers , Ayr United ) , "
    "stadium.Name ( text | values : Stark's Park , Somerset Park ) , "
    "stadium.Capacity ( number | values : 10104 , 11998 ) , "
    "stadium.Highest ( number | values : 4812 , 2363 ) , "
    "stadium.Lowest ( number | values : 1294 , 1057 ) , "
    "stadium.Average ( number | values : 2106 , 1477 ) ]\n"
    "table singer , columns = [ singer.Singer_ID ( number | primary key | values : 1 , 2 ) , "
    "singer.Name ( text | values : Joe Sharp , Timbaland ) , "
    "singer.Country ( text | values : Netherlands , United States ) , "
    "singer.Song_Name ( text | values : You , Dangerous ) , "
    "singer.Song_release_year ( text | values : 1992 , 2008 ) , "
    "singer.Age ( number | values : 52 , 32 ) , "
    "singer.Is_male ( others | values : F , T ) ]\n"
    "table concert , columns = [ concert.concert_ID ( number | primary key | values : 1 , 2 ) , "
    "concert.concert_Name ( text | values : Auditions , Super bootcamp ) , "
    "concert.Theme ( text | values : Free choice , Free choice 2 ) , "
    "concert.Stadium_ID ( text | values : 1 , 2 ) , "
    "concert.Year ( text | values : 2014 , 2015 ) ]\n"
    "table singer_in_concert , columns = [ "
    "singer_in_concert.concert_ID ( number | primary key | values : 1 , 2 ) , "
    "singer_in_concert.Singer_ID ( text | values : 2 , 3 ) ]\n"
    "foreign keys :\n"
    "concert.Stadium_ID = stadium.Stadium_ID\n"
    "singer_in_concert.Singer_ID = singer.Singer_ID\n"
    "singer_in_concert.concert_ID = concert.concert_ID\n"
    "matched values :\n"
    "singer.Song_release_year ( 2014 )\n"
    "concert.Year ( 2014 )\n"
    f"question : {CONCERT_2014}\n"
)

GOLDEN_T5 = (
    f"{CONCERT_2014} | concert_singer"
    " | stadium : Stadium_ID , Location , Name , Capacity , Highest , Lowest , Average"
    " | singer : Singer_ID , Name , Country , Song_Name , Song_release_year ( 2014 ) , Age , Is_male"
    " | concert : concert_ID , concert_Name , Theme , Stadium_ID , Year ( 2014 )"
    " | singer_in_concert : concert_ID , Singer_ID"
)


@pytest.mark.parametrize("style, golden", [("codes", GOLDEN_CODES), ("t5", GOLDEN_T5)])
def test_golden_prompt(dev, style, golden):
    prompt = _prompter(dev, style)(_example(dev, "concert_singer", CONCERT_2014))
    assert prompt.text == golden
    assert not prompt.schema_only and prompt.dropped == {}


@pytest.mark.parametrize(
    "db_id, question, expected",
    [
        (
            "concert_singer",
            "What is the average, minimum, and maximum age of all singers from France?",
            [("singer.Country", "France", True)],
        ),
        # Partial: the question names one word of the value "Hey Oh".
        (
            "concert_singer",
            "what is the name and nation of the singer who have a song having 'Hey' in its name?",
            [("singer.Song_Name", "Hey Oh", False)],
        ),
        # Plurals match singular values; two values of one column.
        (
            "pets_1",
            "What are the students' first names who have both cats and dogs as pets?",
            [("Pets.PetType", "cat", True), ("Pets.PetType", "dog", True)],
        ),
        (
            "car_1",
            "How many car models were produced by the maker with full name American Motor Company?",
            [("car_makers.FullName", "American Motor Company", True)],
        ),
    ],
)
def test_matched_values(dev, db_id, question, expected):
    prompter = _prompter(dev, "codes")
    db = prompter.values.get(db_id)
    found = [
        (dev.schemas[db_id].qualified(m.column), m.value, m.exact) for m in db.match(question, 10)
    ]
    assert found[: len(expected)] == expected
    text = prompter(_example(dev, db_id, question)).text
    column, value, _ = expected[0]
    assert f"matched values :\n{column} ( {value}" in text


def test_no_matches_for_a_question_without_values(dev):
    db = _prompter(dev, "codes").values.get("concert_singer")
    assert db.match("How many singers do we have?", 10) == []


def test_missing_database_gives_schema_only_prompt(dev):
    prompter = _prompter(dev, "codes")
    wta = [e for e in dev.examples if e.db_id == "wta_1"]
    assert wta, "dev has questions on wta_1, whose sqlite file is missing"
    for e in wta:
        prompt = prompter(e)
        assert prompt.schema_only
        assert "values :" not in prompt.text and "matched values" not in prompt.text
        assert (
            "table players , columns = [ players.player_id ( number | primary key ) ,"
            in prompt.text
        )
    prompter(_example(dev, "concert_singer", CONCERT_2014))
    assert prompter.stats.schema_only == len(wta)
    assert prompter.stats.missing_databases == {"wta_1": len(wta)}
    assert (
        f"{len(wta)} schema-only (missing database: wta_1 ({len(wta)}))" in prompter.stats.summary()
    )


def _count_words(text):
    return len(text.split())


@pytest.mark.parametrize("style", ["codes", "t5"])
def test_truncation_keeps_question_and_counts_drops(dev, style):
    example = _example(dev, "concert_singer", CONCERT_2014)
    full = _prompter(dev, style)(example).text
    budget = int(0.85 * _count_words(full))
    prompter = _prompter(dev, style, count_tokens=_count_words, budget=budget)
    prompt = prompter(example)
    assert _count_words(prompt.text) <= budget
    assert CONCERT_2014 in prompt.text
    assert prompt.dropped and prompter.stats.truncated == 1
    assert dict(prompter.stats.dropped) == prompt.dropped
    # The fewest drops: a linear scan over the drop order stops at the same item.
    content = prompts._content(
        example,
        dev.schemas["concert_singer"],
        prompter.values.get("concert_singer"),
        prompter.options,
    )
    order = prompts._drop_order(content, style)
    k = next(
        k
        for k in range(len(order) + 1)
        if _count_words(prompter._text(content, order[:k])) <= budget
    )
    assert k > 0
    assert sum(n for kind, n in prompt.dropped.items() if kind != "table") == k
    if style == "codes":
        # Sample values go first, from the end of the schema.
        assert prompt.dropped == {"sample_values": k}
        assert "singer_in_concert.Singer_ID ( text )" in prompt.text
        assert "stadium.Stadium_ID ( number | primary key | values : 1 , 2 )" in prompt.text


def test_truncation_drops_tables_from_the_end(dev):
    example = _example(dev, "concert_singer", CONCERT_2014)
    prompter = _prompter(dev, "t5", count_tokens=_count_words, budget=40)
    prompt = prompter(example)
    assert prompt.text.startswith(f"{CONCERT_2014} | concert_singer | stadium : Stadium_ID")
    assert "singer_in_concert" not in prompt.text
    assert prompt.dropped["table"] >= 1 and prompt.dropped["matched_value"] == 2


def test_question_longer_than_budget_is_an_error(dev):
    example = _example(dev, "concert_singer", CONCERT_2014)
    prompter = _prompter(dev, "t5", count_tokens=_count_words, budget=5)
    with pytest.raises(prompts.PromptError, match=r"dev\.json\[\d+\]: the question alone"):
        prompter(example)


def test_evidence_only_when_configured():
    e = spider.Example("db", "How many?", "SELECT 1", evidence="rich refers to money > 10")
    for style in prompts.STYLES:
        off = prompts.Prompter({}, None, prompts.PromptOptions(style=style))(e).text
        on = prompts.Prompter({}, None, prompts.PromptOptions(style=style, use_evidence=True))(
            e
        ).text
        assert "rich refers" not in off
        assert "evidence : rich refers to money > 10" in on


def test_value_reads_are_cached_and_never_write(dev, spider_dir, monkeypatch):
    path = spider_dir / "database" / "concert_singer" / "concert_singer.sqlite"
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    reads = []
    real = values_lib.read_database_values
    monkeypatch.setattr(
        values_lib, "read_database_values", lambda *a: reads.append(a[0]) or real(*a)
    )
    prompter = _prompter(dev, "codes")
    for e in [e for e in dev.examples if e.db_id == "concert_singer"]:
        prompter(e)
    assert len(reads) == 1
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    conn = values_lib.connect_read_only(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("CREATE TABLE kid_probe (x)")
    conn.close()


def test_sample_values_are_short_and_distinct(tmp_path):
    from kid.data import schema as schema_lib

    db = tmp_path / "t.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER)")
    rows = [("x" * 30, 1), ("", 1), ("same", 1), ("same", 2), ("Other  value", 3)]
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    schema = schema_lib.schema_from_sqlite(db)
    values = values_lib.read_database_values(db, schema, values_lib.ValueOptions())
    assert values.samples == {1: ("same", "Other value"), 2: ("1", "2")}
    assert [(m.value, m.exact) for m in values.match("rows with the other value", 5)] == [
        ("Other value", True)
    ]


def test_columns_missing_in_the_database_are_reported(tmp_path):
    from kid.data import schema as schema_lib

    (tmp_path / "db").mkdir()
    path = tmp_path / "db" / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.execute("INSERT INTO t VALUES ('Paris')")
    conn.commit()
    conn.close()
    schema = schema_lib.schema_from_sqlite(path)
    ghost = schema_lib.Column(0, "b", "b", "text")
    schema = dataclasses.replace(schema, columns=schema.columns + (ghost,))
    prompter = prompts.Prompter({"db": schema}, str(tmp_path))
    prompt = prompter(spider.Example("db", "Who lives in Paris?", "SELECT b FROM t"))
    assert "t.a ( text | values : Paris )" in prompt.text and "t.b ( text )" in prompt.text
    assert "matched values :\nt.a ( Paris )" in prompt.text
    assert "columns missing in the database file: db (1)" in prompter.stats.summary()


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT count(*) FROM singer;", "SELECT count(*) FROM singer"),
        (
            "  SELECT name ,  age\n FROM t WHERE x  =  'a  b' ; ;",
            "SELECT name , age FROM t WHERE x = 'a b'",
        ),
        ('SELECT "Australia\t"', 'SELECT "Australia "'),
    ],
)
def test_normalize_sql(sql, expected):
    assert prompts.normalize_sql(sql) == expected


def test_unknown_style_is_an_error():
    with pytest.raises(prompts.PromptError, match="'bert'"):
        prompts.PromptOptions(style="bert")
