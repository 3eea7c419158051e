"""The executor pool: typed errors, caps, timeouts, worker replacement, no jax in workers."""

import ast
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from kid.sql import sandbox
from kid.sql.executor import ERRORS, Executor

REPO = pathlib.Path(__file__).resolve().parents[1]
# Counts to 10^9: seconds of work that the progress handler must cut short.
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"


def _slow(n: int) -> str:
    """A query that returns n after about 0.25 s per million (here, on one core)."""
    return (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
        "SELECT max(x) FROM c"
    )


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("db") / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);
        INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'ink', 3.0), (3, 'pad', 2.0);
        """
    )
    conn.execute("INSERT INTO item VALUES (4, CAST(x'ff6f6b' AS TEXT), 0)")  # invalid UTF-8
    conn.commit()
    conn.close()
    return str(path)


@pytest.fixture(scope="module")
def pool():
    with Executor(2, timeout=1.0, kill_grace=1.0, max_rows=50, max_bytes=4096) as ex:
        yield ex


def test_rows_come_back_in_job_order(pool, db):
    results = pool.run([(db, "SELECT name FROM item WHERE id < 3 ORDER BY id"), (db, "SELECT 7")])
    assert [r.rows for r in results] == [[("pen",), ("ink",)], [(7,)]]
    assert pool.run([(db, "SELECT name FROM item WHERE id = 4")])[0].rows == [("ok",)]


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("SELEC name FROM item", "syntax"),
        ("SELECT name FROM item WHERE", "syntax"),
        ("", "syntax"),
        ("  -- just a comment", "syntax"),
        ("SELECT nope FROM item", "runtime"),
        ("SELECT * FROM missing_table", "runtime"),
        ("SELECT length(randomblob(200000000))", "runtime"),
        (SLOW, "timeout"),
        ("DROP TABLE item", "forbidden"),
        ("DROP TABLE no_such_table", "forbidden"),
        ("DELETE FROM item", "forbidden"),
        ("UPDATE item SET price = 0", "forbidden"),
        ("INSERT INTO item VALUES (9, 'x', 1)", "forbidden"),
        ("/* hi */ CREATE TABLE x (a)", "forbidden"),
        ("ATTACH 'other.sqlite' AS other", "forbidden"),
        ("PRAGMA writable_schema = 1", "forbidden"),
        ("PRAGMA table_info(item)", "forbidden"),
        ("SELECT * FROM pragma_table_info('item')", "forbidden"),
        ("VACUUM INTO 'copy.sqlite'", "forbidden"),
        ("WITH x AS (SELECT 1) DELETE FROM item", "forbidden"),
        ("SELECT load_extension('libevil')", "forbidden"),
        ("SELECT 1; DROP TABLE item", "forbidden"),
        ("SELECT 1; SELECT 2", "forbidden"),
        ("SELECT * FROM item a, item b, item c, item d", "result_too_large"),  # 256 > 50 rows
        (
            "SELECT group_concat(a.name || b.name) FROM item a, item b, item c, item d, item e",
            "result_too_large",
        ),  # one value over 4096 bytes
    ],
)
def test_typed_errors(pool, db, sql, kind):
    result = pool.run([(db, sql)])[0]
    assert (result.error, result.rows) == (kind, None), result.message
    assert kind in ERRORS


def test_trailing_semicolons_and_comments_are_one_statement(pool, db):
    results = pool.run([(db, "SELECT 1;"), (db, "SELECT 1; -- done"), (db, "SELECT 1;;\n")])
    assert [r.rows for r in results] == [[(1,)]] * 3


def test_missing_database(pool, tmp_path):
    result = pool.run([(str(tmp_path / "nope.sqlite"), "SELECT 1")])[0]
    assert result.error == "missing_database"
    assert not (tmp_path / "nope.sqlite").exists()


def test_timeout_is_prompt_and_pool_goes_on(pool, db):
    start = time.monotonic()
    results = pool.run([(db, SLOW), (db, SLOW), (db, SLOW), (db, "SELECT 2")])
    elapsed = time.monotonic() - start
    assert [r.error for r in results] == ["timeout"] * 3 + [None]
    assert elapsed < 2 * 1.0 + 2.0  # three 1 s timeouts on two workers, plus a margin


def test_replaces_a_worker_that_stops_answering(db):
    with Executor(1, timeout=1.0, kill_grace=0.5) as ex:
        ex.run([(db, "SELECT 1")])  # started and ready
        (pid,) = ex.pids
        threading.Timer(0.2, os.kill, (pid, signal.SIGSTOP)).start()
        start = time.monotonic()
        results = ex.run([(db, _slow(10**7)), (db, "SELECT 2"), (db, "SELECT 3")])
        assert time.monotonic() - start < 1.0 + 0.5 + 2.0  # timeout + grace + margin
        assert [r.error for r in results] == ["timeout", None, None]
        assert [r.rows for r in results[1:]] == [[(2,)], [(3,)]]
        assert ex.replaced == 1 and ex.pids != [pid]


def _kill_twice(ex: Executor) -> None:
    """Kills the worker while it runs the job, and again after it is replaced."""
    for _ in range(2):
        time.sleep(0.3)
        pids = ex.pids
        os.kill(pids[0], signal.SIGKILL)
        while ex.pids == pids:
            time.sleep(0.01)


def test_a_job_whose_worker_dies_is_retried_once(db):
    with Executor(1, timeout=20.0) as ex:
        ex.run([(db, "SELECT 1")])
        threading.Timer(0.3, lambda: os.kill(ex.pids[0], signal.SIGKILL)).start()
        results = ex.run([(db, _slow(5 * 10**6)), (db, "SELECT 2")])
        assert [r.rows for r in results] == [[(5 * 10**6,)], [(2,)]]
        assert ex.replaced == 1

        killer = threading.Thread(target=_kill_twice, args=(ex,))
        killer.start()
        results = ex.run([(db, _slow(5 * 10**6)), (db, "SELECT 3")])
        killer.join()
        assert results[0].error == "runtime" and "worker died" in results[0].message
        assert results[1].rows == [(3,)]


def test_abandoned_run_leaves_the_pool_usable(db):
    with Executor(2, timeout=5.0, batch_size=4) as ex:
        for _ in ex.imap_unordered([(db, "SELECT 1")] * 40):
            break
        assert [r.rows for r in ex.run([(db, "SELECT 5")] * 3)] == [[(5,)]] * 3


def test_closed_executor_refuses_work(db):
    ex = Executor(1)
    pids = ex.pids
    ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        ex.run([(db, "SELECT 1")])
    for pid in pids:
        assert not pathlib.Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    return "State:\tZ" in pathlib.Path(f"/proc/{pid}/status").read_text()


def test_sandbox_imports_only_the_standard_library():
    tree = ast.parse(pathlib.Path(sandbox.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs /proc")
def test_workers_started_from_a_jax_process_load_no_jax(db):
    script = (
        "import jax, jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
        "from kid.sql.executor import Executor\n"
        "with Executor(1) as ex:\n"
        f"    assert ex.run([({db!r}, 'SELECT 1')])[0].rows == [(1,)]\n"
        "    worker = open(f'/proc/{ex.pids[0]}/maps').read()\n"
        "print('jax' in open('/proc/self/maps').read(), 'jax' in worker)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False"], out.stderr  # the parent has jax mapped


def test_kid_sql_imports_no_jax():
    script = (
        "import sys, kid.sql.executor, kid.sql.scoring, kid.sql.report, kid.sql.sql_files\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
