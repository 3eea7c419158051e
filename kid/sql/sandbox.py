"""Read-only SQL execution, the code that runs inside each executor worker process.

The executor (`kid.sql.executor`) starts this file as a script in a fresh interpreter
(`python -s -P -S -B sandbox.py --fd N ...`, no PYTHON* variable but the pool's
PYTHONHASHSEED), so a worker imports nothing but the standard library: never jax, never
the caller's `__main__`. Every query meets these guards:

- the database is opened through a `mode=ro` URI, plus `immutable=1` when every
  committed page is in the main file (no `-journal`, no `-wal` with content, rollback or
  WAL mode alike), so sqlite takes no locks and creates no side files; otherwise (a live
  or crashed writer's `-wal`) the `-shm` / `-wal` files that opening created are removed
  when the connection closes, after each job (a worker killed mid-query may leave one).
  Then `query_only`, in-memory temp storage and no ATTACH slots;
- a statement that starts with a write or admin keyword (DROP, DELETE, PRAGMA, ...) is
  refused before sqlite sees it; an authorizer allows only SELECT, READ, FUNCTION and
  recursive CTEs, and denies `load_extension` and `fts3_tokenizer`: DDL, DML, ATTACH,
  VACUUM, PRAGMA, transactions, ANALYZE and REINDEX fail as `forbidden`;
- exactly one statement runs: text after the first statement (other than comments and
  trailing semicolons) makes the whole string `forbidden`, and nothing of it runs;
  an empty statement is a `syntax` error;
- a progress handler stops the query at its deadline (`timeout`);
- results are capped in rows and in pickled bytes (`result_too_large`);
- a file sqlite cannot read as a database (not one, corrupt, unopenable) is
  `bad_database`, for every query on it;
- the process has an address-space limit, ignores SIGINT (the parent handles it), exits
  when its parent dies (stdin closes, or it is re-parented) and leaves quietly when the
  parent's socket closes mid-answer.

Results go back as rows, or (`forms=True`, for scoring) as a `ResultForm`: the result
reduced here to digests that decide EX, so the parent holds no rows. Values digest equal
exactly when Python finds them equal (`1 == 1.0`, text != blob); a false "equal" needs a
64-bit hash collision; forms compare within one pool (its workers share a hash seed). A
form decides bags of rows up to column order alone when every group of columns with the
same value bag holds identical columns (the common case, many equal columns included);
otherwise it carries those ambiguous columns' cells for `kid.sql.exec_match`'s capped
search, unless rows x (ambiguous columns + 1) > `MAX_PERMUTATION_CELLS` (`too_complex`).
Reducing counts against the query's timeout.
"""

from __future__ import annotations

import argparse
import array
import hashlib
import itertools
import math
import operator
import os
import pickle
import re
import resource
import select
import signal
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import NamedTuple

READY = ("ready",)  # sent once at start, before any answer
ERRORS = (
    "syntax",
    "runtime",
    "timeout",
    "forbidden",
    "missing_database",
    "result_too_large",
    "bad_database",
)
MAX_PERMUTATION_CELLS = 1 << 18  # cells a form keeps for the column-permutation search

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
# sqlite primary result codes of a file that cannot be read as a database.
_BAD_DATABASE_CODES = frozenset((10, 11, 14, 26))  # IOERR, CORRUPT, CANTOPEN, NOTADB
_SIDE_FILES = ("-wal", "-shm")
_CHECK_EVERY_ROWS = 4096  # rows reduced between deadline checks
_SHAPES_KEPT = 1024  # result shapes a worker remembers for later jobs' `expect`


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
    """True when every committed page is in the main file: a rollback-journal or WAL
    database with no journal and no WAL content beside it."""
    if os.path.exists(path + "-journal"):
        return False
    try:
        if os.stat(path + "-wal").st_size > 0:
            return False
    except FileNotFoundError:
        pass
    with open(path, "rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[18] in (1, 2) and header[19] in (1, 2)


def _decode(b: bytes) -> str:
    return b.decode(errors="ignore")  # as the official evaluators read text


def readonly_uri(path: str) -> str:
    """The URI that opens `path` read-only, and immutable (no side files) when safe."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return uri + "&immutable=1" if _immutable_is_safe(path) else uri


def open_readonly(path: str) -> tuple[sqlite3.Connection, _Guard]:
    """A guarded read-only connection to the sqlite file at `path`."""
    uri = readonly_uri(path)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # a bad file fails here
    except BaseException:
        conn.close()
        raise
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
    if getattr(error, "sqlite_errorcode", 0) & 0xFF in _BAD_DATABASE_CODES:
        return "bad_database"
    if isinstance(error, UnicodeError) or any(m in message for m in _SYNTAX_MESSAGES):
        return "syntax"
    return "runtime"


# --- results reduced to what EX comparison needs ----------------------------------------


class ResultForm(NamedTuple):
    """A result as digests (64-bit ints); see the module docstring and `result_form`."""

    nrows: int
    ncols: int
    ordered_quick: int  # the evaluator's quick test, rows in order
    set_quick: int  # the evaluator's quick test, as a set of rows
    ordered_columns: int  # the bag of column sequences: EX when row order matters
    bag_columns: int  # the bag of column value-bags
    bag_rows: int | None  # the bag of rows, columns in canonical order; None: ambiguous
    # (some same-bag columns are not identical)
    search: tuple | None  # ambiguous: (fixed part per row, ((bag, cells), ...)); None if too big
    bird_rows: int | None  # the set of rows as they are

    @classmethod
    def shape_only(cls, nrows: int, ncols: int) -> ResultForm:
        """A result known to differ in shape from the one it will be compared with."""
        return cls(nrows, ncols, None, None, None, None, None, None, None)


def _other_shape(expect: tuple[int, int] | None, nrows: int, ncols: int) -> bool:
    """Is the result unequal to one of shape `expect` by shape alone (Spider's EX)?"""
    if expect is None or (nrows == 0 and expect[0] == 0):
        return False  # both empty: equal, whatever their columns
    return (nrows, ncols) != tuple(expect)


def _digests_and_keys(kind: type, values: list) -> tuple[list[int], list[str]]:
    """Digests of distinct values of one type, and the evaluator's sort keys for them.

    Digests are Python hashes, which equal values share (`1 == 1.0`), and which are the
    same in every worker of a pool (it gives them one PYTHONHASHSEED); each type but str
    hashes tagged text, so no type's digests collide with another's but by chance, and
    ints go through their decimal text (`hash(-1) == hash(-2)`)."""
    suffix = str(kind)
    if kind is str:
        return list(map(hash, values)), list(map(operator.add, values, itertools.repeat(suffix)))
    if kind is int:
        text = list(map(str, values))
        return list(map(hash, zip(itertools.repeat("i"), text))), [t + suffix for t in text]
    if kind is float:
        digests = [
            hash(("i", str(int(v)))) if v.is_integer() else hash(("f", v.hex())) for v in values
        ]
        return digests, [str(v) + suffix for v in values]
    if kind is bytes:
        return list(map(hash, zip(itertools.repeat("b"), values))), [_sort_key(v) for v in values]
    return [hash(("r", repr(v))) for v in values], [_sort_key(v) for v in values]


def _digest(ints: Sequence[int]) -> int:
    """A 64-bit digest of 64-bit ints, the same in every process."""
    digest = hashlib.blake2b(array.array("q", ints).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _value_bag(digests: Sequence[int]) -> int:
    """A digest of a bag of value digests: their sum, as they are random (no sort)."""
    return (sum(digests) + (1 << 63)) % (1 << 64) - (1 << 63)


def _sort_key(value: object) -> str:
    return str(value) + str(type(value))  # the evaluator's order inside a row


def _rows(cells: list[tuple[int, ...]], columns: Sequence[int]) -> list[int]:
    """Row digests of `cells` projected on `columns`, in that order (hash() of int
    tuples is the same in every process: only str / bytes hashes are salted)."""
    if not columns:
        return [hash(())] * len(cells)
    if len(columns) == 1:
        return [hash((row[columns[0]],)) for row in cells]
    return list(map(hash, map(operator.itemgetter(*columns), cells)))


def _chunks(rows: Sequence[tuple], deadline: float) -> Iterator[Sequence[tuple]]:
    """`rows` in slices, raising TimeoutError between them once past `deadline`."""
    for start in range(0, len(rows), _CHECK_EVERY_ROWS):
        if time.monotonic() > deadline:
            raise TimeoutError("reducing the result took past the deadline")
        yield rows[start : start + _CHECK_EVERY_ROWS]


def _typed(rows: Sequence[tuple]) -> Iterator[Iterator[tuple[type, object]]]:
    """Each row's (type, value) pairs, at C speed."""
    return map(zip, map(map, itertools.repeat(type), rows), rows)


def _mapped(function, rows: Iterable[Iterable]) -> Iterator[tuple]:
    """`tuple(map(function, row))` for each row, at C speed."""
    return map(tuple, map(map, itertools.repeat(function), rows))


def _digest_cells(rows: Sequence[tuple], deadline: float) -> tuple[list, list[int]]:
    """(value digests by row, digest of each row in the evaluator's sorted order).

    The per-value work is done once per distinct value, by type, ranked by the
    evaluator's sort key; rows are then mapped through dicts at C speed. With floats
    present, values are told apart by type too (1 and 1.0 are one dict key but sort apart).
    """
    distinct: set[tuple[type, object]] = set()
    for chunk in _chunks(rows, deadline):
        distinct.update(itertools.chain.from_iterable(_typed(chunk)))
    by_type: dict[type, list] = {}
    for kind, value in distinct:
        by_type.setdefault(kind, []).append(value)
    keys, digests, sort_keys = [], [], []
    for kind, values in by_type.items():
        kind_digests, kind_keys = _digests_and_keys(kind, values)
        keys += zip(itertools.repeat(kind), values) if float in by_type else values
        digests += kind_digests
        sort_keys += kind_keys
    order = sorted(range(len(keys)), key=sort_keys.__getitem__)
    rank = dict(zip(map(keys.__getitem__, order), itertools.count()))
    by_rank = list(map(digests.__getitem__, order))
    value_of = operator.itemgetter(1) if float in by_type else (lambda key: key)
    digest = dict(zip(map(value_of, keys), digests, strict=True)).__getitem__
    ranked, nth = rank.__getitem__, by_rank.__getitem__
    cells, unordered = [], []
    for chunk in _chunks(rows, deadline):
        cells += _mapped(digest, chunk)
        ranks = map(
            sorted, map(map, itertools.repeat(ranked), _typed(chunk) if float in by_type else chunk)
        )
        unordered += map(hash, _mapped(nth, ranks))
    return cells, unordered


def result_form(rows: Sequence[tuple], deadline: float = math.inf) -> ResultForm:
    """Reduces rows to a `ResultForm` (raises TimeoutError past `deadline`)."""
    cells, unordered = _digest_cells(rows, deadline)
    width = len(cells[0]) if cells else 0
    columns = list(zip(*cells, strict=True))
    sequence = [_digest(col) for col in columns]
    bag = [_value_bag(col) for col in columns]
    order = sorted(range(width), key=lambda c: (bag[c], sequence[c]))
    sequences_by_bag: dict[int, set[int]] = {}
    for c in order:
        sequences_by_bag.setdefault(bag[c], set()).add(sequence[c])
    loose = [c for c in order if len(sequences_by_bag[bag[c]]) > 1]
    fixed = [c for c in order if len(sequences_by_bag[bag[c]]) == 1]
    search = None
    if loose and len(cells) * (len(loose) + 1) <= MAX_PERMUTATION_CELLS:
        packed = tuple((bag[c], array.array("q", columns[c]).tobytes()) for c in loose)
        search = (array.array("q", _rows(cells, fixed)).tobytes(), packed)
    return ResultForm(
        nrows=len(cells),
        ncols=width,
        ordered_quick=_digest(unordered),
        set_quick=_digest(sorted(set(unordered))),
        ordered_columns=_digest(sorted(sequence)),
        bag_columns=_digest(sorted(bag)),
        bag_rows=None if loose else _digest(sorted(_rows(cells, order))),
        search=search,
        bird_rows=_digest(sorted(set(_rows(cells, range(width))))),
    )


# --- running jobs ------------------------------------------------------------------------


def run_query(
    conn: sqlite3.Connection,
    guard: _Guard,
    sql: str,
    *,
    timeout: float,
    max_rows: int,
    max_bytes: int,
    forms: bool = False,
    expect: tuple[int, int] | None = None,
) -> tuple:
    """Runs one statement: ("ok", [pickled row chunks], nbytes), ("form", form tuple,
    nbytes) with `forms`, or ("error", kind, message). With `forms` and the (rows,
    columns) shape of the result it will be compared with, one of another shape is not
    digested (`ResultForm.shape_only`)."""
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
            chunks.append(rows if forms else chunk)
        if forms:
            rows = [row for rows in chunks for row in rows]
            shape = (len(rows), len(rows[0]) if rows else 0)
            if _other_shape(expect, *shape):
                return ("form", tuple(ResultForm.shape_only(*shape)), 64)
            form = result_form(rows, guard.deadline)
            fixed, loose = form.search or (b"", ())
            return ("form", tuple(form), 64 + len(fixed) + sum(len(c) for _, c in loose))
    except MemoryError:
        return ("error", "runtime", "out of memory")
    except TimeoutError as e:
        return ("error", "timeout", str(e))
    except Exception as e:  # noqa: BLE001 - every failure of the query becomes a typed error
        return ("error", classify(e, guard), f"{type(e).__name__}: {e}")
    finally:
        cursor.close()
    return ("ok", chunks, nbytes)


class _Entry(NamedTuple):
    stamp: tuple[int, int]
    conn: sqlite3.Connection
    guard: _Guard
    created: tuple[str, ...]  # side files that opening created, removed on close


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _open_entry(path: str, stamp: tuple[int, int]) -> _Entry:
    """Opens `path`, noting the side files that opening created."""
    absent = [path + suffix for suffix in _SIDE_FILES if not os.path.exists(path + suffix)]
    try:
        conn, guard = open_readonly(path)
    except BaseException:
        _remove([p for p in absent if os.path.exists(p)])
        raise
    return _Entry(stamp, conn, guard, tuple(p for p in absent if os.path.exists(p)))


def _close(entry: _Entry) -> None:
    entry.conn.close()
    _remove(entry.created)


class Databases:
    """Open connections by path, reopened when the file changes; a few kept open."""

    def __init__(self, capacity: int = 8):
        self._capacity = capacity
        self._open: dict[str, _Entry] = {}

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
        if entry is not None and entry.stamp != stamp:
            _close(entry)
            entry = None
        if entry is None:
            entry = _open_entry(path, stamp)
        self._open[path] = entry  # most recently used last
        while len(self._open) > self._capacity:
            _close(self._open.pop(next(iter(self._open))))
        return entry.conn, entry.guard

    def release(self, path: str) -> None:
        """After a job: closes a connection that created side files, removing them."""
        entry = self._open.get(path)
        if entry is not None and entry.created:
            _close(self._open.pop(path))

    def close(self) -> None:
        for entry in self._open.values():
            _close(entry)
        self._open.clear()


def run_job(
    databases: Databases,
    path: str,
    sql: str,
    timeout: float,
    max_rows: int,
    max_bytes: int,
    forms: bool = False,
    expect: tuple[int, int] | None = None,
) -> tuple:
    """One job of a batch: opens (or reuses) the database, then runs the query."""
    try:
        opened = databases.get(path)
    except (sqlite3.Error, OSError) as e:
        return ("error", "bad_database", f"cannot open {path}: {e}")
    if opened is None:
        return ("error", "missing_database", f"{path} not found")
    conn, guard = opened
    try:
        return run_query(
            conn,
            guard,
            sql,
            timeout=timeout,
            max_rows=max_rows,
            max_bytes=max_bytes,
            forms=forms,
            expect=expect,
        )
    finally:
        databases.release(path)


def serve(conn: Connection) -> None:
    """Answers batches `(timeout, max_rows, max_bytes, forms, [(path, sql, token, expect),
    ...])` one job at a time.

    `expect` is the shape of the result a job's will be compared with, or the token of
    an earlier job whose shape that is (known if this worker ran it, as it usually runs
    a gold just before its prediction). Each answer is sent as soon as its job ends, so
    the parent knows which job a worker is on, and can kill and replace a worker that
    stops answering. EOF ends the loop.
    """
    databases = Databases()
    shapes: dict[int, tuple[int, int]] = {}  # token -> shape, of recent forms
    conn.send(READY)
    try:
        while True:
            try:
                timeout, max_rows, max_bytes, forms, jobs = conn.recv()
            except EOFError:
                return
            for path, sql, token, expect in jobs:
                shape = shapes.get(expect) if isinstance(expect, int) else expect
                answer = run_job(databases, path, sql, timeout, max_rows, max_bytes, forms, shape)
                if answer[0] == "form":
                    shapes[token] = answer[1][:2]
                    while len(shapes) > _SHAPES_KEPT:
                        del shapes[next(iter(shapes))]
                conn.send(answer)
    finally:
        databases.close()


def _exit_with_parent(parent: int) -> None:
    """Ends the process once the parent is gone: its end of our stdin pipe closes, or (if
    a forked process still holds that pipe) we are re-parented."""
    while True:
        readable, _, _ = select.select([0], [], [], 1.0)
        if (readable and not os.read(0, 1)) or os.getppid() != parent:
            os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="socket to the parent")
    parser.add_argument("--memory", type=int, default=0, help="address-space limit, bytes")
    parser.add_argument("--parent", type=int, default=0, help="exit when this process is gone")
    args = parser.parse_args()
    if args.memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if args.parent:
        threading.Thread(target=_exit_with_parent, args=(args.parent,), daemon=True).start()
    try:
        serve(Connection(args.fd))
    except OSError:  # the parent closed the socket mid-answer (BrokenPipe, reset)
        pass


if __name__ == "__main__":
    main()
