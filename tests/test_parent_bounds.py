"""The evaluator's parent process is bounded (issue 12): one bad prediction costs one
verdict, never the run, and no database or folder changes.

Every hostile input is generated here: deep nesting, long UNION chains, huge strings and
IN lists, many equal-valued columns, predictions that are not text, WAL-mode and corrupt
databases. A hypothesis test drives the whole parent path with random shapes of them.
"""

import collections
import dataclasses
import hashlib
import itertools
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kid.data import schema as schema_lib
from kid.sql import exec_match, sandbox
from kid.sql.executor import ERRORS, Executor
from kid.sql.scoring import MAX_SQL_CHARS, PARENT_RSS_BUDGET, Scorer

REPO = pathlib.Path(__file__).resolve().parents[1]
DB = "concert_singer"
TIMEOUT, GRACE = 1.0, 1.0
MARGIN_S = 3.0  # pool start, a worker replaced, a loaded machine
GOLD = "SELECT name FROM singer"


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under root (folders included, by name), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def _nested_in(depth: int) -> str:
    inner = "".join(" WHERE age IN (SELECT age FROM singer" for _ in range(depth))
    return "SELECT name FROM singer" + inner + ")" * depth


def _unions(count: int) -> str:
    return " UNION ".join([GOLD] * (count + 1))


def _quoted(length: int, quote: str = "'") -> str:
    close = {"[": "]"}.get(quote, quote)
    return f"SELECT name FROM singer WHERE name = {quote}{'x' * length}{close}"


def _in_list(chars: int) -> str:
    return "SELECT name FROM singer WHERE age IN (" + ",".join(["1"] * (chars // 2)) + ")"


def _columns(count: int) -> str:
    return "SELECT " + ", ".join(["age"] * count) + " FROM singer"


def _values(rows) -> str:
    return " UNION ALL ".join("SELECT " + ", ".join(map(str, row)) for row in rows)


def _parity_rows(width: int, gold: bool) -> list[tuple]:
    """Every even (twice) and odd (once) bit vector, or the reverse: every projection on
    fewer columns agrees, and no column order makes the two equal."""
    even = [r for r in itertools.product((0, 1), repeat=width) if sum(r) % 2 == 0]
    odd = [r for r in itertools.product((0, 1), repeat=width) if sum(r) % 2]
    return even * 2 + odd if gold else even + odd * 2


def _parity(width: int, gold: bool) -> str:
    return _values(_parity_rows(width, gold))


class PeakRss:
    """The process's peak resident memory above its level at start, sampled every 5 ms."""

    def __init__(self):
        self._process = psutil.Process()
        self.base = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


@pytest.fixture(scope="module")
def root(tmp_path_factory, spider_dir) -> pathlib.Path:
    """database/<db_id>/ copies (one also as a corrupt file), a test suite with a broken
    member, and the workers' working directory."""
    root = tmp_path_factory.mktemp("parent")
    source = spider_dir / "database" / DB / f"{DB}.sqlite"
    for db_id in (DB, "corrupt_known", "corrupt_unknown"):
        (root / "database" / db_id).mkdir(parents=True)
    shutil.copy(source, root / "database" / DB / f"{DB}.sqlite")
    garbage = os.urandom(8192)
    for db_id in ("corrupt_known", "corrupt_unknown"):
        (root / "database" / db_id / f"{db_id}.sqlite").write_bytes(garbage)
    (root / "ts" / DB).mkdir(parents=True)
    shutil.copy(source, root / "ts" / DB / "a.sqlite")
    (root / "ts" / DB / "b.sqlite").write_bytes(garbage[:4096])
    old = os.getcwd()
    os.chdir(root)
    yield root
    os.chdir(old)


@pytest.fixture(scope="module")
def schemas(spider_dir):
    schema = schema_lib.schema_from_sqlite(spider_dir / "database" / DB / f"{DB}.sqlite", DB)
    corrupt = dataclasses.replace(schema, db_id="corrupt_known")
    return {DB: schema, "corrupt_known": corrupt}  # corrupt_unknown: not in the tables


@pytest.fixture(scope="module")
def scorer(root, schemas):
    with Scorer(
        root / "database", schemas=schemas, workers=2, timeout=TIMEOUT, kill_grace=GRACE
    ) as s:
        yield s


def _check(verdicts, n: int) -> None:
    assert [v.idx for v in verdicts] == list(range(n))
    for v in verdicts:
        assert v.error is None or v.error in ERRORS or v.error.removeprefix("gold_") in ERRORS, v
        assert v.exec in (0, 1, None) and v.match in (0, 1, None)


HOSTILE = [  # (prediction, gold, the verdict's error)
    (_nested_in(300), GOLD, {"runtime", None}),  # sqlite's own depth limit, or a result
    (_unions(1000), GOLD, {"runtime"}),  # over sqlite's 500 compound terms
    (_quoted(10_000_000), GOLD, {"too_long"}),
    (_in_list(5_000_000), GOLD, {"too_long"}),
    (_quoted(MAX_SQL_CHARS - 100, '"'), GOLD, {None}),  # just under the limit: judged
    (None, GOLD, {"not_text"}),
    (b"SELECT name FROM singer", GOLD, {"not_text"}),
    (7, GOLD, {"not_text"}),
    (GOLD, _quoted(MAX_SQL_CHARS + 1), {"gold_too_long"}),
    (GOLD, None, {"gold_not_text"}),
]


def test_hostile_corpus_costs_one_verdict_each(scorer, root):
    before = _snapshot(root)
    golds = [(gold, DB) for _, gold, _ in HOSTILE]
    preds = [pred for pred, _, _ in HOSTILE]
    with PeakRss() as rss:
        start = time.monotonic()
        verdicts = scorer.score(golds, preds)
        elapsed = time.monotonic() - start
    _check(verdicts, len(HOSTILE))
    for (pred, _, errors), v in zip(HOSTILE, verdicts, strict=True):
        assert v.error in errors, (str(pred)[:80], v)
    assert verdicts[4].exec == 0 and verdicts[4].match == 0  # judged, and wrong
    assert all(v.exec == 0 for v in verdicts if v.error in ("too_long", "not_text"))
    assert elapsed < len(HOSTILE) * TIMEOUT / 2 + MARGIN_S
    assert rss.growth < PARENT_RSS_BUDGET
    assert _snapshot(root) == before
    future = scorer.submit([(GOLD, DB)] * 3, [None, b"x", GOLD])  # a trainer's failed decode
    assert [(v.exec, v.error) for v in future.result()] == [(0, "not_text")] * 2 + [(1, None)]


def test_many_equal_valued_columns(scorer):
    same = _columns(40)
    pair = "SELECT T1.singer_id, T2.singer_id FROM singer T1 JOIN singer T2"
    cases = [  # (gold, prediction, exec, error)
        (same, same, 1, None),
        (same, "SELECT " + ", ".join(["age"] * 39 + ["age + 1"]) + " FROM singer", 0, None),
        (pair, "SELECT T2.singer_id, T1.singer_id FROM singer T1 JOIN singer T2", 1, None),
        (_parity(8, True), _parity(8, True), 1, None),
        (_parity(8, True), _parity(8, False), 0, "too_complex"),
    ]
    start = time.monotonic()
    verdicts = scorer.score([(g, DB) for g, _, _, _ in cases], [p for _, p, _, _ in cases])
    assert time.monotonic() - start < len(cases) * TIMEOUT / 2 + MARGIN_S
    assert [(v.exec, v.error) for v in verdicts] == [(e, err) for _, _, e, err in cases]


def _brute_force(gold, pred) -> bool:
    """Some column order under which the rows are equal as bags, after the quick test."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    key = lambda v: str(v) + str(type(v))  # noqa: E731
    if {tuple(sorted(r, key=key)) for r in gold} != {tuple(sorted(r, key=key)) for r in pred}:
        return False
    bag = collections.Counter(gold)
    return any(
        collections.Counter(tuple(row[j] for j in perm) for row in pred) == bag
        for perm in itertools.permutations(range(len(gold[0])))
    )


@st.composite
def _ambiguous_tables(draw):
    """Narrow alphabets, so that columns share value bags without being identical."""
    width = draw(st.integers(2, 6))
    values = st.sampled_from([0, 1, 1.0, "a"])
    gold = draw(st.lists(st.tuples(*[values] * width), min_size=1, max_size=8))
    if draw(st.booleans()):
        pred = draw(st.lists(st.tuples(*[values] * width), min_size=1, max_size=8))
    else:
        perm = draw(st.permutations(range(width)))
        pred = [tuple(row[j] for j in perm) for row in draw(st.permutations(gold))]
        if draw(st.booleans()):  # swap two cells of one row: often still a permutation
            i, a, b = draw(st.integers(0, len(pred) - 1)), *draw(st.permutations(range(width)))[:2]
            row = list(pred[i])
            row[a], row[b] = row[b], row[a]
            pred[i] = tuple(row)
    return gold, pred


@settings(max_examples=300, deadline=None, database=None)
@given(_ambiguous_tables())
def test_permutation_search_is_exact_under_its_cap(tables):
    gold, pred = tables
    assert exec_match.spider_equal(gold, pred, False) == _brute_force(gold, pred)


def test_permutation_search_is_capped():
    gold, pred = (sandbox.result_form(_parity_rows(10, g)) for g in (True, False))
    start = time.monotonic()
    with pytest.raises(exec_match.TooComplex):
        exec_match.forms_equal(gold, pred, False)
    assert time.monotonic() - start < 5.0


def test_results_of_another_shape_are_not_digested(root):
    db = str(root / "database" / DB / f"{DB}.sqlite")
    jobs = [(db, "SELECT count(*) FROM singer"), (db, GOLD), (db, GOLD), (db, "SELECT 1 LIMIT 0")]
    with Executor(1) as ex:  # one worker: it ran job 0 before job 1
        forms = [r.form for r in ex.run(jobs, forms=True, expect=[None, 0, (6, 1), (1, 1)])]
    assert [(f.nrows, f.ncols) for f in forms] == [(1, 1), (6, 1), (6, 1), (0, 0)]
    assert [f.bird_rows is None for f in forms] == [False, True, False, True]
    assert not exec_match.forms_equal(forms[0], forms[1], False)


def test_workers_of_a_pool_digest_alike(root):
    db = str(root / "database" / DB / f"{DB}.sqlite")
    with Executor(2, batch_size=1) as ex:  # jobs alternate between the two workers
        forms = {
            r.form for r in ex.run([(db, "SELECT name, country, age FROM singer")] * 8, forms=True)
        }
    assert len(forms) == 1


def test_regex_is_linear_on_a_long_string():
    text = _quoted(10_000_000) + " DISTINCT"
    with PeakRss() as rss:
        assert exec_match.remove_distinct(text).endswith("x' ")
    assert rss.growth < 100 << 20  # the backtracking version took ~1.3 GB


def _wal_copy(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True)
    path = folder / f"{folder.name}.sqlite"
    shutil.copy(source, path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()
    return path


def test_wal_databases_get_no_side_files(tmp_path, spider_dir):
    source = spider_dir / "database" / DB / f"{DB}.sqlite"
    clean = _wal_copy(source, tmp_path / "db" / "clean")
    live = _wal_copy(source, tmp_path / "db" / "live")
    writer = sqlite3.connect(live)  # a writer with uncheckpointed rows in live-wal
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO singer (singer_id, name) VALUES (99, 'wal row')")
    writer.commit()
    crashed = tmp_path / "db" / "crashed" / "crashed.sqlite"  # a -wal, no -shm
    crashed.parent.mkdir()
    shutil.copy(live, crashed)
    shutil.copy(f"{live}-wal", f"{crashed}-wal")
    before = _wal_snapshot(tmp_path)
    count = "SELECT count(*) FROM singer"
    golds = [(count, "clean"), (count, "live"), (count, "crashed")]
    with Scorer(tmp_path / "db", workers=2, etype="exec") as s:
        verdicts = s.score(golds, [count, "SELECT 6", count])  # live has 7 rows
    with Executor(1) as ex:
        rows = [r.rows for r in ex.run([(str(p), count) for p in (clean, live, crashed)])]
    after = _wal_snapshot(tmp_path)
    writer.close()
    assert [(v.exec, v.error) for v in verdicts] == [(1, None), (0, None), (1, None)]
    assert rows == [[(6,)], [(7,)], [(7,)]]  # the WAL's row is read
    assert after == before  # no -shm / -wal left behind, not a byte changed


def _wal_snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every file name, and the bytes of all but the live writer's shared memory (-shm),
    which its readers update by design."""
    return {
        path: digest if not path.endswith("live.sqlite-shm") else "shm"
        for path, digest in _snapshot(root).items()
    }


def test_corrupt_databases_cost_their_own_examples(root, schemas):
    golds = [(GOLD, DB), (GOLD, "corrupt_known"), (GOLD, "corrupt_unknown"), (GOLD, "../x")]
    preds = [GOLD] * 4
    with Scorer(root / "database", schemas=schemas, ts_dir=root / "ts", timeout=TIMEOUT) as s:
        verdicts = s.score(golds, preds)
    assert [(v.exec, v.match, v.ts, v.error) for v in verdicts] == [
        (1, 1, None, "ts_bad_database"),  # a.sqlite agrees, b.sqlite cannot be read
        (None, 1, None, "bad_database"),  # its schema is in the tables: exact match
        (None, None, None, "bad_database"),  # no schema to read from it
        (0, 0, None, "invalid_db_id"),
    ]
    with Scorer(root / "database", schemas=schemas, etype="match") as s:
        assert [(v.match, v.error) for v in s.score(golds[1:3], preds[1:3])] == [
            (1, None),
            (None, "bad_database"),
        ]


_WORKER_SCRIPT = """
import sys, time
from kid.sql.executor import Executor
ex = Executor(2, timeout=20.0)
print(*ex.pids, flush=True)
slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) "
        "SELECT max(x) FROM c")
for i, result in ex.imap_unordered([(sys.argv[1], "SELECT 1")] + [(sys.argv[1], slow)] * 4):
    if sys.argv[2] == "raise":
        raise RuntimeError("the real message")
    time.sleep(60)
"""


def _gone(pids: list[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["kill", "raise"])
def test_workers_die_with_their_parent_quietly(root, how):
    db = str(root / "database" / DB / f"{DB}.sqlite")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen(
        [sys.executable, "-c", _WORKER_SCRIPT, db, how],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids = [int(p) for p in parent.stdout.readline().split()]
    if how == "kill":
        time.sleep(0.5)  # the workers are busy with the slow queries
        os.kill(pids[0], signal.SIGINT)  # Ctrl-C is the parent's: the worker ignores it
        parent.kill()
    _, stderr = parent.communicate(timeout=30)
    assert _gone(pids, 5.0), "a worker outlived its parent"
    if how == "raise":
        assert "the real message" in stderr
        assert stderr.count("Traceback") == 1, stderr  # none from the workers
    else:
        assert "Traceback" not in stderr, stderr


def _sizes(high: int, *edges: int) -> st.SearchStrategy[int]:
    """Small, any up to `high`, and around each edge (hypothesis favours small ones)."""
    near = [st.integers(max(0, e - 100), e + 100) for e in edges]
    return st.one_of(st.integers(0, 10), st.integers(0, high), *near)


_LENGTHS = _sizes(2 * MAX_SQL_CHARS, MAX_SQL_CHARS - 40)  # the query around the limit
_SHAPES = st.one_of(
    st.builds(_nested_in, _sizes(400, 32, 300)),
    st.builds(_unions, _sizes(1200, 500, 1000)),
    st.builds(_quoted, _LENGTHS, st.sampled_from(["'", '"', "`", "["])),
    st.builds(lambda n: _quoted(n)[:-1], _LENGTHS),  # unterminated
    st.builds(_in_list, _LENGTHS),
    st.builds(_columns, st.integers(1, 60)),
    st.sampled_from([None, b"SELECT 1", 3, 2.5, "", "SELECT", GOLD]),
)
_PAIRS = st.one_of(
    st.tuples(_SHAPES, st.one_of(st.just(GOLD), st.builds(_columns, st.integers(1, 60)))),
    st.integers(1, 60).map(lambda k: (_columns(k), _columns(k))),  # equal-valued columns
    st.integers(2, 8).map(lambda k: (_parity(k, False), _parity(k, True))),  # too_complex
)


def test_hypothesis_parent_path(scorer, root):
    before = _snapshot(root)

    @settings(max_examples=80, deadline=None, database=None)
    @given(st.lists(_PAIRS, min_size=1, max_size=4))
    def check(pairs):
        golds = [(gold, DB) for _, gold in pairs]
        preds = [pred for pred, _ in pairs]
        with PeakRss() as rss:
            start = time.monotonic()
            verdicts = scorer.score(golds, preds)
            elapsed = time.monotonic() - start
        _check(verdicts, len(pairs))
        assert elapsed < 2 * len(pairs) * (TIMEOUT + GRACE) + MARGIN_S  # gold + pred each
        assert rss.growth < PARENT_RSS_BUDGET

    check()
    assert _snapshot(root) == before
