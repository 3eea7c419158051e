"""A pool of sandboxed worker processes that run SQL on sqlite databases, read-only.

Workers are fresh interpreters running `kid/sql/sandbox.py` (see there for the
guards on each query). They are spawned, never forked, so a pool can be started from
a process that runs JAX; they import only the standard library. Jobs go to workers in
batches (few round trips, well under 2 ms of pool overhead per job), and each answer
comes back as soon as its job ends. A worker that dies is replaced and its job retried
once; a worker that gives no answer for `timeout + kill_grace` seconds (a query the
progress handler could not stop, a stopped process) is killed, replaced, and its job
gets a `timeout` error. The other jobs of its batch are run by the next worker. Workers
exit when the parent process dies (see `kid.sql.sandbox`).

With `forms=True` a result comes back as a `ResultForm` (`Result.form`), the digests EX
compares, instead of rows: a few hundred bytes for most results, so a parent holding
many results (a slow gold keeps its predictions waiting) stays small.

Every failure is a typed error, one of `ERRORS` (meanings in `ERROR_KINDS`); the worker
gives the first seven, `kid.sql.scoring` the others (a verdict's error is one of these,
or `gold_<kind>` when the gold query failed).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import pickle
import secrets
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from multiprocessing.connection import Connection, wait

from kid.sql import sandbox

ERROR_KINDS = {
    "syntax": "sqlite cannot parse the query, or it is empty",
    "runtime": "the query failed while running (unknown column, out of memory, ...)",
    "timeout": "the query ran past the timeout",
    "forbidden": "not one read-only statement (a write, PRAGMA, ATTACH, several statements)",
    "missing_database": "no regular file at the database path",
    "result_too_large": "the result is over the row or byte cap",
    "bad_database": "the file cannot be read as a sqlite database (corrupt, not one)",
    "not_text": "the SQL is not a str (None, bytes, a number)",
    "too_long": "the SQL is longer than kid.sql.scoring.MAX_SQL_CHARS; not run nor parsed",
    "too_deep": "parsing the SQL recursed too deep (RecursionError)",
    "too_complex": "judging needs more work or memory than the caps allow "
    "(the column-permutation search's MAX_PERMUTATION_WORK, a MemoryError)",
    "invalid_db_id": "the db_id is not a plain name (one path component)",
    "ts_bad_database": "a test-suite database cannot be read: no TS verdict",
    "internal": "an unexpected exception while judging this example (a bug in kid)",
}
ERRORS = tuple(ERROR_KINDS)
assert ERRORS[: len(sandbox.ERRORS)] == sandbox.ERRORS
_SANDBOX_SCRIPT = sandbox.__file__
_STARTUP_ALLOWANCE_S = 30.0  # a fresh interpreter on a loaded machine


@dataclasses.dataclass(frozen=True)
class Result:
    """What one query returned: rows (or their form), or a typed error (one of ERRORS)."""

    rows: list[tuple] | None
    error: str | None = None
    message: str = ""
    nbytes: int = 0  # pickled size of the rows, or the form's size
    form: sandbox.ResultForm | None = None

    @classmethod
    def from_answer(cls, answer: tuple) -> Result:
        if answer[0] == "ok":
            _, chunks, nbytes = answer
            return cls([row for chunk in chunks for row in pickle.loads(chunk)], nbytes=nbytes)
        if answer[0] == "form":
            _, form, nbytes = answer
            return cls(None, nbytes=nbytes, form=sandbox.ResultForm(*form))
        _, kind, message = answer
        return cls(None, kind, message)


class _Worker:
    """One sandbox process, the socket to it, and the jobs it has not answered yet."""

    def __init__(self, memory_limit: int, hash_seed: int):
        # No PYTHON* variable (as -I, which would also drop the seed) but the pool's hash
        # seed, so that every worker digests text alike (`sandbox.ResultForm`).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONHASHSEED"] = str(hash_seed)
        parent, child = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-s",  # no user site
                    "-P",  # no script folder on sys.path
                    "-S",  # no site: stdlib only
                    "-B",
                    _SANDBOX_SCRIPT,
                    "--fd",
                    str(child.fileno()),
                    "--memory",
                    str(memory_limit),
                    "--parent",
                    str(os.getpid()),
                ],
                pass_fds=[child.fileno()],
                env=env,
                stdin=subprocess.PIPE,  # never written: it closes when this process dies
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.pending: collections.deque[int] = collections.deque()
        self.deadline = 0.0
        self.ready = False  # the worker reports once it has started

    def send(self, jobs: list[int], batch: list[tuple[str, str]], limits: tuple, deadline: float):
        """Sends a batch under `limits` (timeout, max rows, max bytes, forms); the first
        answer is due by `deadline`."""
        if not self.ready:
            deadline += _STARTUP_ALLOWANCE_S
        self.conn.send((*limits, batch))
        self.pending.extend(jobs)
        self.deadline = deadline

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()
        self.close()

    def close(self) -> None:
        """Closes the socket and the stdin pipe: the worker exits on either."""
        self.conn.close()
        try:
            self.process.stdin.close()
        except OSError:
            pass


def _shutdown(workers: list[_Worker], wait_s: float = 2.0) -> None:
    """Closes the sockets (workers exit on EOF); kills those still busy after `wait_s`."""
    for w in workers:
        w.close()
    deadline = time.monotonic() + wait_s
    for w in workers:
        try:
            w.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
    workers.clear()


class Executor:
    """Runs (database path, SQL) jobs in a pool of sandboxed worker processes.

    Args:
      workers: number of worker processes.
      timeout: seconds a query may run; it then fails with error "timeout".
      max_rows, max_bytes: result caps; a larger result fails with "result_too_large".
      memory_limit: address-space limit of each worker in bytes (0: none).
      kill_grace: seconds past `timeout` after which a silent worker is killed.
      batch_size: most jobs sent to a worker at once.

    Use as a context manager, or call `close()`; a pool left open is shut down when it
    is garbage collected or at exit.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        timeout: float = 30.0,
        max_rows: int = 200_000,
        max_bytes: int = 64 << 20,
        memory_limit: int = 2 << 30,
        kill_grace: float = 2.0,
        batch_size: int = 32,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not 0 < timeout < math.inf:  # nan would disable every deadline
            raise ValueError(f"timeout must be finite and > 0, got {timeout}")
        self._limits = (float(timeout), int(max_rows), int(max_bytes))
        self._kill_after = float(timeout) + float(kill_grace)  # seconds without an answer
        self._memory_limit = int(memory_limit)
        self._batch_size = batch_size
        self._hash_seed = secrets.randbelow(1 << 32)  # one per pool: forms compare within it
        self._calls = itertools.count()
        self._workers = [_Worker(self._memory_limit, self._hash_seed) for _ in range(workers)]
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        self.replaced = 0  # workers replaced after a death or a hang

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.process.pid for w in self._workers]

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(
        self,
        jobs: Sequence[tuple[str, str]],
        on_result: Callable[[int], None] | None = None,
        *,
        forms: bool = False,
        expect: Sequence[tuple[int, int] | int | None] | None = None,
    ) -> list[Result]:
        """Runs every (path, sql) job; results in job order. `on_result(i)` after each."""
        results: list[Result | None] = [None] * len(jobs)
        for i, result in self.imap_unordered(jobs, forms=forms, expect=expect):
            results[i] = result
            if on_result is not None:
                on_result(i)
        return results  # type: ignore[return-value]

    def imap_unordered(
        self,
        jobs: Sequence[tuple[str, str]],
        *,
        forms: bool = False,
        expect: Sequence[tuple[int, int] | int | None] | None = None,
    ) -> Iterator[tuple[int, Result]]:
        """Yields (job index, Result) as jobs finish; one call runs at a time.

        Args:
          forms: results as `Result.form` instead of rows.
          expect: per job, the (rows, columns) shape of the result it will be compared
            with (Spider's EX), or the index of the job whose result that is; a form of
            another shape comes back `ResultForm.shape_only`, not digested. None: none.
        """
        call = next(self._calls) << 32  # tokens name jobs across calls, for `expect`
        expect = [None] * len(jobs) if expect is None else expect
        absolute = {path: os.path.abspath(path) for path in {path for path, _ in jobs}}
        jobs = [
            (absolute[path], sql, call + j, call + e if isinstance(e, int) else e)
            for j, ((path, sql), e) in enumerate(zip(jobs, expect, strict=True))
        ]
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("executor is closed")
            yield from self._schedule(jobs, (*self._limits, forms))

    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = _Worker(self._memory_limit, self._hash_seed)
        self.replaced += 1

    def _schedule(self, jobs: list[tuple], limits: tuple) -> Iterator[tuple[int, Result]]:
        queue = collections.deque(range(len(jobs)))
        retried: set[int] = set()
        try:
            while queue or any(w.pending for w in self._workers):
                self._dispatch(queue, jobs, limits)
                busy = [w for w in self._workers if w.pending]
                wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready = set(wait([w.conn for w in busy], wait_s))
                for index, w in enumerate(list(self._workers)):
                    if w.pending and w.conn in ready:
                        if (yield from self._drain(w)):
                            continue
                        job = self._requeue_and_replace(index, queue)  # it died
                        if job in retried:
                            message = f"worker died (exit code {w.process.returncode})"
                            yield job, Result(None, "runtime", message)
                        else:
                            retried.add(job)
                            queue.appendleft(job)
                    elif w.pending and time.monotonic() >= w.deadline:
                        job = self._requeue_and_replace(index, queue)
                        yield job, Result(None, "timeout", "worker stopped answering; killed")
        finally:
            # An abandoned run leaves answers in flight: those workers start afresh.
            for index, w in enumerate(list(self._workers)):
                if w.pending:
                    w.pending.clear()
                    self._replace(index)

    def _dispatch(self, queue: collections.deque[int], jobs: list[tuple], limits: tuple) -> None:
        """Gives a batch to every idle worker; smaller batches near the end keep them even."""
        for index, w in enumerate(self._workers):
            if not queue or w.pending:
                continue
            size = max(1, min(self._batch_size, len(queue) // (2 * len(self._workers))))
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            deadline = time.monotonic() + self._kill_after
            self._send(index, batch, [jobs[i] for i in batch], limits, deadline)

    def _drain(self, w: _Worker) -> Generator[tuple[int, Result], None, bool]:
        """Yields the answers waiting from `w`; returns False if the worker is gone."""
        while True:
            answer = _receive(w.conn)
            if answer is None:
                return False
            w.deadline = time.monotonic() + self._kill_after
            if answer == sandbox.READY:
                w.ready = True
            else:
                yield w.pending.popleft(), Result.from_answer(answer)
            if not (w.pending and w.conn.poll()):
                return True

    def _send(self, index: int, jobs: list[int], batch: list, limits: tuple, deadline: float):
        """Sends a batch, replacing a worker that died while idle."""
        try:
            self._workers[index].send(jobs, batch, limits, deadline)
        except OSError:
            self._replace(index)
            self._workers[index].send(jobs, batch, limits, deadline)

    def _requeue_and_replace(self, index: int, queue: collections.deque[int]) -> int:
        """Takes a failed worker's current job, puts its other jobs back, replaces it."""
        w = self._workers[index]
        job = w.pending.popleft()
        queue.extendleft(reversed(w.pending))
        w.pending.clear()
        self._replace(index)
        return job


def _receive(conn: Connection) -> tuple | None:
    """The next answer, or None when the worker is gone."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None
