"""Hostile and random SQL on copies of real Spider databases: nothing is written, nothing
hangs, the caller never crashes, and every failure is a typed error."""

import hashlib
import os
import pathlib
import shutil
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kid.sql.executor import ERRORS, Executor
from kid.sql.scoring import Scorer

DBS = ("flight_4", "concert_singer", "world_1")  # flight_4.routes: Spider's largest table
TIMEOUT = 1.0
GRACE = 1.0
CROSS4 = "FROM routes a, routes b, routes c, routes d"

HOSTILE = [
    ("DROP TABLE routes", {"forbidden"}),
    ("DELETE FROM routes", {"forbidden"}),
    ("UPDATE routes SET rid = 0", {"forbidden"}),
    ("INSERT INTO airlines (alid) VALUES (-1)", {"forbidden"}),
    ("REPLACE INTO airlines (alid) VALUES (1)", {"forbidden"}),
    ("WITH x AS (SELECT 1) DELETE FROM routes", {"forbidden"}),
    ("CREATE TABLE evil (a)", {"forbidden"}),
    ("CREATE TEMP TABLE evil (a)", {"forbidden"}),
    ("CREATE INDEX evil ON routes (rid)", {"forbidden"}),
    ("ALTER TABLE routes RENAME TO evil", {"forbidden"}),
    ("ATTACH 'evil.sqlite' AS evil", {"forbidden"}),
    ("ATTACH DATABASE ':memory:' AS evil", {"forbidden"}),
    ("VACUUM", {"forbidden"}),
    ("VACUUM INTO 'evil.sqlite'", {"forbidden"}),
    ("REINDEX", {"forbidden"}),
    ("ANALYZE", {"forbidden"}),
    ("BEGIN EXCLUSIVE", {"forbidden"}),
    ("PRAGMA writable_schema = 1", {"forbidden"}),
    ("PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = ''", {"forbidden"}),
    ("PRAGMA query_only = 0", {"forbidden"}),
    ("PRAGMA journal_mode = WAL", {"forbidden"}),
    ("SELECT * FROM pragma_database_list", {"forbidden"}),
    ("SELECT load_extension('/tmp/evil')", {"forbidden"}),
    ("SELECT 1; DROP TABLE routes", {"forbidden"}),
    ("DROP TABLE routes; SELECT 1", {"forbidden"}),
    ("SELECT rid FROM routes; DELETE FROM routes", {"forbidden"}),
    ("SELECT writefile('evil.txt', 'x')", {"runtime"}),  # a shell function, absent here
    ("SELECT zeroblob(1000000000)", {"runtime"}),
    (f"SELECT count(*) {CROSS4}", {"timeout"}),
    (f"SELECT * {CROSS4}", {"timeout", "result_too_large"}),
    (f"SELECT a.rid {CROSS4} ORDER BY random()", {"timeout"}),
    (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
        {"timeout", "result_too_large"},
    ),
]


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, spider_dir):
    """Copies of a few databases; also the workers' working directory."""
    root = tmp_path_factory.mktemp("hostile")
    for db_id in DBS:
        shutil.copytree(spider_dir / "database" / db_id, root / "database" / db_id)
        (root / "database" / db_id / f"{db_id}.sqlite").chmod(0o644)  # writable, if allowed
    old = os.getcwd()
    os.chdir(root)
    yield root
    os.chdir(old)


@pytest.fixture(scope="module")
def before(workdir):
    return _snapshot(workdir)


@pytest.fixture(scope="module")
def executor(workdir, before):
    with Executor(2, timeout=TIMEOUT, kill_grace=GRACE) as ex:
        yield ex


def test_hostile_statements(workdir, before, executor):
    db = str(workdir / "database/flight_4/flight_4.sqlite")
    start = time.monotonic()
    results = executor.run([(db, sql) for sql, _ in HOSTILE])
    elapsed = time.monotonic() - start
    for (sql, kinds), result in zip(HOSTILE, results, strict=True):
        assert result.error in kinds, (sql, result)
    slow = sum("timeout" in kinds for _, kinds in HOSTILE)
    assert elapsed < slow * TIMEOUT / 2 + 3.0  # two workers, plus a margin
    assert executor.replaced == 0  # the progress handler stopped every query in time
    assert _snapshot(workdir) == before
    assert executor.run([(db, "SELECT count(*) FROM routes")])[0].rows == [(67240,)]


_WORDS = [
    "SELECT",
    "DISTINCT",
    "FROM",
    "WHERE",
    "JOIN",
    "ON",
    "AS",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "BETWEEN",
    "HAVING",
    "count(*)",
    "max(",
    "avg(",
    ")",
    "(",
    ",",
    "*",
    "=",
    ">",
    "< =",
    "'x'",
    "1",
    "value",
    ";",
    "routes",
    "airlines",
    "airports",
    "singer",
    "city",
    "country",
    "rid",
    "name",
    "alid",
    "T1",
    "T1.name",
    "--",
    "/*",
    "'",
    '"',
    "`",
    "[",
    "DROP TABLE routes",
    "DELETE FROM",
    "UPDATE routes SET rid = 1",
    "ATTACH 'evil.sqlite' AS e",
    "PRAGMA writable_schema = 1",
    "VACUUM INTO 'evil.sqlite'",
    "CREATE TABLE e (a)",
    "routes a, routes b, routes c",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)",
]
_sql = st.one_of(
    st.lists(st.sampled_from(_WORDS), max_size=14).map(" ".join),
    st.text(max_size=40),
    st.sampled_from([sql for sql, _ in HOSTILE[:28]]),  # the fast ones
)


@pytest.fixture(scope="module")
def scorer(workdir, spider_tables, before):
    with Scorer(
        workdir / "database", schemas=spider_tables, workers=2, timeout=0.5, kill_grace=GRACE
    ) as s:
        yield s


def test_fuzz_scorer_never_crashes_nor_writes(scorer, workdir, before):
    gold = {
        "flight_4": "SELECT count(*) FROM routes",
        "concert_singer": "SELECT name FROM singer",
        "world_1": "SELECT name FROM city WHERE population > 1000000",
    }

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.lists(st.tuples(_sql, st.sampled_from(DBS)), min_size=1, max_size=4))
    def check(pairs):
        golds = [(gold[db_id], db_id) for _, db_id in pairs]
        start = time.monotonic()
        verdicts = scorer.score(golds, [sql for sql, _ in pairs])
        assert time.monotonic() - start < len(pairs) * 0.5 + 3.0
        for v in verdicts:
            assert v.exec in (0, 1) and v.match in (0, 1) and v.ts is None
            assert v.error is None or v.error in ERRORS, v
            assert v.error is None or v.exec == 0

    check()
    assert _snapshot(workdir) == before
