"""Read-only SQL execution, the code that runs inside each executor worker process.

The executor (`kid.sql.executor`) starts this file as a script in a fresh interpreter
(`python -I -S -B sandbox.py --fd N`), so a worker imports nothing but the standard
library: never jax, never the caller's `__main__`. Every query meets these guards:

- the database is opened through a `mode=ro` URI (plus `immutable=1` for a rollback-
  journal database with no journal or WAL file beside it, so sqlite takes no locks and
  creates no side files), with `query_only`, in-memory temp storage and no ATTACH slots;
- a statement that starts with a write or admin keyword (DROP, DELETE, PRAGMA, ...) is
  refused before sqlite sees it; an authorizer allows only SELECT, READ, FUNCTION and
  recursive CTEs, and denies `load_extension` and `fts3_tokenizer`: DDL, DML, ATTACH,
  VACUUM, PRAGMA, transactions, ANALYZE and REINDEX fail as `forbidden`;
- exactly one statement runs: text after the first statement (other than comments and
  trailing semicolons) makes the whole string `forbidden`, and nothing of it runs;
  an empty statement is a `syntax` error;
- a progress handler stops the query at its deadline (`timeout`);
- results are capped in rows and in pickled bytes (`result_too_large`);
- the process has an address-space limit.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import resource
import sqlite3
import stat
import time
import urllib.parse
from multiprocessing.connection import Connection

READY = ("ready",)  # sent once at start, before any answer
ERRORS = ("syntax", "runtime", "timeout", "forbidden", "missing_database", "result_too_large")

_SQLITE_RECURSIVE = 33  # named in the sqlite3 module only from Python 3.11
_ALLOWED_ACTIONS = frozenset(
    (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, _SQLITE_RECURSIVE)
)
_DENIED_FUNCTIONS = frozenset(("load_extension", "fts3_tokenizer"))
# Statements that never read: refused before sqlite sees them (the authorizer would only
# be asked once the named table exists, so `DROP TABLE no_such_table` would otherwise
# fail as a runtime error).
_WRITE_OR_ADMIN = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))\s*)*"
    r"(?:alter|analyze|attach|begin|commit|create|delete|detach|drop|end|insert|pragma"
    r"|reindex|release|replace|rollback|savepoint|update|vacuum)\b",
    re.IGNORECASE | re.DOTALL,
)
_SYNTAX_MESSAGES = ("syntax error", "incomplete input", "unrecognized token", "null character")
_PROGRESS_OPS = 1000  # VM instructions between deadline checks
_FETCH_ROWS = 256
_MAX_VALUE_BYTES = 64 << 20  # SQLITE_LIMIT_LENGTH: longest string or blob a query may build


class _Guard:
    """Per-connection state the authorizer and progress handler report through."""

    def __init__(self):
        self.deadline = 0.0
        self.denied = False
        self.timed_out = False

    def authorize(self, action, arg1, arg2, db_name, trigger) -> int:
        del arg1, db_name, trigger
        if action in _ALLOWED_ACTIONS and not (
            action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS
        ):
            return sqlite3.SQLITE_OK
        self.denied = True
        return sqlite3.SQLITE_DENY

    def progress(self) -> int:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0


def _immutable_is_safe(path: str) -> bool:
    """True for a rollback-journal database with no journal or WAL file beside it."""
    if os.path.exists(path + "-journal") or os.path.exists(path + "-wal"):
        return False
    with open(path, "rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[18] == 1 and header[19] == 1


def _decode(b: bytes) -> str:
    return b.decode(errors="ignore")  # as the official evaluators read text


def open_readonly(path: str) -> tuple[sqlite3.Connection, _Guard]:
    """A guarded read-only connection to the sqlite file at `path`."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    if _immutable_is_safe(path):
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA trusted_schema = OFF")
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
    conn.text_factory = _decode
    guard = _Guard()
    conn.set_authorizer(guard.authorize)
    conn.set_progress_handler(guard.progress, _PROGRESS_OPS)
    return conn, guard


def classify(error: BaseException, guard: _Guard) -> str:
    """The typed error kind of an exception raised while running one query."""
    message = str(error).lower()
    if guard.timed_out:
        return "timeout"
    if guard.denied or "one statement at a time" in message:
        return "forbidden"
    if isinstance(error, UnicodeError) or any(m in message for m in _SYNTAX_MESSAGES):
        return "syntax"
    return "runtime"


def run_query(
    conn: sqlite3.Connection,
    guard: _Guard,
    sql: str,
    *,
    timeout: float,
    max_rows: int,
    max_bytes: int,
) -> tuple:
    """Runs one statement: ("ok", [pickled row chunks], nbytes) or ("error", kind, message)."""
    guard.deadline = time.monotonic() + timeout
    guard.denied = guard.timed_out = False
    if _WRITE_OR_ADMIN.match(sql):
        return ("error", "forbidden", "not a read-only statement")
    cursor = conn.cursor()
    chunks, nbytes, nrows = [], 0, 0
    try:
        cursor.execute(sql.rstrip(" \t\r\n;"))
        if cursor.description is None:
            return ("error", "syntax", "empty statement")
        while rows := cursor.fetchmany(_FETCH_ROWS):
            nrows += len(rows)
            chunk = pickle.dumps(rows, pickle.HIGHEST_PROTOCOL)
            nbytes += len(chunk)
            if nrows > max_rows or nbytes > max_bytes:
                return ("error", "result_too_large", f"over {max_rows} rows or {max_bytes} bytes")
            chunks.append(chunk)
    except MemoryError:
        return ("error", "runtime", "out of memory")
    except Exception as e:  # noqa: BLE001 - every failure of the query becomes a typed error
        return ("error", classify(e, guard), f"{type(e).__name__}: {e}")
    finally:
        cursor.close()
    return ("ok", chunks, nbytes)


class Databases:
    """Open connections by path, reopened when the file changes; a few kept open."""

    def __init__(self, capacity: int = 8):
        self._capacity = capacity
        self._open: dict[str, tuple[tuple[int, int], sqlite3.Connection, _Guard]] = {}

    def get(self, path: str) -> tuple[sqlite3.Connection, _Guard] | None:
        """The open connection of ``path``; None when it is not an existing regular file."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        entry = self._open.pop(path, None)
        if entry is not None and entry[0] != stamp:
            entry[1].close()
            entry = None
        if entry is None:
            conn, guard = open_readonly(path)
            entry = (stamp, conn, guard)
        self._open[path] = entry  # most recently used last
        while len(self._open) > self._capacity:
            oldest = next(iter(self._open))
            self._open.pop(oldest)[1].close()
        return entry[1], entry[2]

    def close(self) -> None:
        for _, conn, _ in self._open.values():
            conn.close()
        self._open.clear()


def run_job(
    databases: Databases, path: str, sql: str, timeout: float, max_rows: int, max_bytes: int
) -> tuple:
    """One job of a batch: opens (or reuses) the database, then runs the query."""
    try:
        opened = databases.get(path)
    except (sqlite3.Error, OSError) as e:
        return ("error", "runtime", f"cannot open {path}: {e}")
    if opened is None:
        return ("error", "missing_database", f"{path} not found")
    conn, guard = opened
    return run_query(conn, guard, sql, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes)


def serve(conn: Connection) -> None:
    """Answers batches `(timeout, max_rows, max_bytes, [(path, sql), ...])` one job at a time.

    Each answer is sent as soon as its job ends, so the parent knows which job a worker
    is on, and can kill and replace a worker that stops answering. EOF ends the loop.
    """
    databases = Databases()
    conn.send(READY)
    try:
        while True:
            try:
                timeout, max_rows, max_bytes, jobs = conn.recv()
            except EOFError:
                return
            for path, sql in jobs:
                conn.send(run_job(databases, path, sql, timeout, max_rows, max_bytes))
    finally:
        databases.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="socket to the parent")
    parser.add_argument("--memory", type=int, default=0, help="address-space limit, bytes")
    args = parser.parse_args()
    if args.memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
    serve(Connection(args.fd))


if __name__ == "__main__":
    main()
