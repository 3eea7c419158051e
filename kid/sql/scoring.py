"""Per-example verdicts (EX, TS, EM, hardness) for predicted SQL.

`Scorer` owns an executor pool and a cache of gold results; `score` is synchronous
(the `python -m kid.evaluate` CLI) and `submit` returns a future, so a trainer can
score decoded SQL while training goes on. Both give the same verdicts.

Verdict fields (CONTRACT 3): exec is the execution verdict on `db_dir/<db_id>/<db_id>
.sqlite` (None when that file is missing, error "missing_database", or cannot be read,
"bad_database", or when execution was not asked for); ts is EX on the main database and
on every `ts_dir/<db_id>/*.sqlite`, as the official test suites include the original
database (so ts <= exec; None without test-suite databases, or when one of them cannot be
read: error "ts_bad_database" unless another error comes first); match is Spider's
exact set match (None without a schema); error says why exec is not 1 when a query
failed: the prediction's error kind (`kid.sql.executor.ERRORS`), or "gold_<kind>" when
the gold query itself failed (that example counts as wrong). A result over the caps is
never judged equal.

One bad example costs its own verdict, never the run. Every step on an example in this
(the parent) process is bounded, and any exception in one becomes that example's error:
- a gold or prediction that is not a str is `not_text` (`gold_not_text`), one longer
  than `MAX_SQL_CHARS` (default 100,000, as `kid.sql.sql_files.MAX_LINE_CHARS` and the
  Spider parse's own limit) is `too_long` (`gold_too_long`): neither is run nor parsed
  (exec 0, match 0, ts 0 where scored); a db_id that is not a plain name is
  `invalid_db_id`;
- the text steps (DISTINCT removal, the Spider parse of hardness and exact match) are
  linear in the text, so at most `MAX_SQL_CHARS` long; a RecursionError is `too_deep`, a
  MemoryError `too_complex`, anything else `internal`;
- results come back from the workers as digests (`kid.sql.sandbox.ResultForm`), jobs are
  queued gold then prediction, example by example, and a result is dropped as soon as it
  is judged (a gold one after its last prediction), so the parent holds O(workers)
  results; comparing two is O(1) but for the capped column-permutation search
  (`kid.sql.exec_match.MAX_PERMUTATION_WORK`, error `too_complex`);
- a sqlite file that cannot be read costs the verdicts of its own examples (its schema,
  when not in the tables file, is then missing: match None).
Parent memory beyond the inputs: ~0.6 KB of bookkeeping per example (tasks, verdicts),
plus O(workers) results; a call on a few hundred examples, whatever they hold, grows the
parent by under `PARENT_RSS_BUDGET` (64 MiB; tests/test_parent_bounds.py asserts it on
its hostile corpus, benchmarks/evaluate_parent.py prints the figures).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import logging
import os
import threading
from collections.abc import Mapping, Sequence

import tqdm

from kid.data import schema as schema_lib
from kid.sql import exact_match, exec_match, hardness, spider_parse
from kid.sql.executor import Executor, Result

METRICS = ("spider", "bird")
ETYPES = ("exec", "match", "all")
LEVELS = (*hardness.LEVELS, "unknown")  # unknown: gold outside Spider's grammar
MAX_SQL_CHARS = 100_000  # longest gold or prediction that is run and parsed
PARENT_RSS_BUDGET = 64 << 20  # the parent's growth on a few hundred examples (see above)

_DATABASE_ERRORS = frozenset(("missing_database", "bad_database"))
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Verdict:
    idx: int
    db_id: str
    hardness: str
    exec: int | None
    match: int | None
    ts: int | None
    error: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class GoldCache:
    """Gold results by (database file identity, SQL text), least recently used dropped."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple, Result] = collections.OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(path: str, sql: str) -> tuple:
        st = os.stat(path)
        return (os.path.realpath(path), st.st_size, st.st_mtime_ns, sql)

    def get(self, key: tuple) -> Result | None:
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
        return result

    def put(self, key: tuple, result: Result) -> None:
        """Keeps a result, unless it is a timeout (which a less busy machine might avoid)."""
        if key in self._entries or result.error == "timeout" or result.nbytes > self.max_bytes:
            return
        self._entries[key] = result
        self._bytes += result.nbytes
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._entries)


def _error_kind(error: BaseException) -> str:
    """The typed error of an exception raised while judging one example."""
    if isinstance(error, RecursionError):
        return "too_deep"
    if isinstance(error, MemoryError | exec_match.TooComplex):
        return "too_complex"
    _log.warning("internal error while judging an example: %r", error)
    return "internal"


def _text_error(sql: object) -> str | None:
    """Why `sql` is not run nor parsed (not_text, too_long), or None."""
    if not isinstance(sql, str):
        return "not_text"
    return "too_long" if len(sql) > MAX_SQL_CHARS else None


@dataclasses.dataclass(frozen=True, slots=True)
class _Example:
    """One (gold, db_id) / prediction pair, checked before any work on it."""

    gold: str
    db_id: str
    pred: str
    error: str | None  # invalid_db_id, gold_not_text, too_long, ...: nothing is run


def _example(entry: object, pred: object) -> _Example:
    try:
        gold, db_id = entry  # type: ignore[misc]
    except (TypeError, ValueError):
        gold, db_id = None, ""
    shown = db_id if isinstance(db_id, str) else repr(db_id)
    if not schema_lib.is_plain_db_id(db_id):
        return _Example("", shown, "", "invalid_db_id")
    if kind := _text_error(gold):
        return _Example("", db_id, "", f"gold_{kind}")
    if kind := _text_error(pred):
        return _Example(gold, db_id, "", kind)
    return _Example(gold, db_id, pred, None)


@dataclasses.dataclass(frozen=True, slots=True)
class _Task:
    """One prediction to run on one database, judged against its gold there."""

    example: int
    path: str
    gold: str
    pred: str
    order_matters: bool
    is_ts: bool


def _judge(
    gold: Result, pred: Result, order_matters: bool, metric: str
) -> tuple[int | None, str | None]:
    for result in (gold, pred):
        if result.error in _DATABASE_ERRORS:
            return None, result.error
    if gold.error is not None:
        return 0, f"gold_{gold.error}"
    if pred.error is not None:
        return 0, pred.error
    try:
        if metric == "bird":
            return int(exec_match.bird_forms_equal(gold.form, pred.form)), None
        return int(exec_match.forms_equal(gold.form, pred.form, order_matters)), None
    except Exception as e:  # noqa: BLE001 - one comparison's failure is its own verdict
        return 0, _error_kind(e)


def _hardness(example: _Example) -> str:
    try:
        return hardness.hardness(example.gold)
    except Exception:  # noqa: BLE001 - outside Spider's grammar, or over its bounds
        return "unknown"


def _cache_key(path: str, sql: str) -> tuple | None:
    try:
        return GoldCache.key(path, sql)
    except OSError:  # the file went away: not cached, the worker reports it
        return None


class _Run:
    """The jobs of one scoring and the results still needed: a prediction's result is
    judged as soon as its gold's is known, and a gold result dropped after its last use."""

    def __init__(self, tasks: list[_Task], cache: GoldCache, metric: str):
        self.tasks, self.cache, self.metric = tasks, cache, metric
        self.jobs: list[tuple[str, str]] = []
        self.owner: list[int] = []  # job -> task index, or -1 for a gold job
        self.expect: list[tuple[int, int] | int | None] = []  # `Executor.imap_unordered`
        self.gold_jobs: dict[int, tuple[tuple[str, str], tuple | None]] = {}
        self.golds: dict[tuple[str, str], Result | None] = {}  # None: not back yet
        self.uses: collections.Counter[tuple[str, str]] = collections.Counter()
        self.waiting: dict[tuple[str, str], list[tuple[int, Result]]] = {}
        self.exec_outcome: dict[int, tuple[int | None, str | None]] = {}
        self.ts_outcome: dict[int, list[int]] = collections.defaultdict(list)
        self.ts_broken: set[int] = set()
        gold_job: dict[tuple[str, str], int] = {}
        for t, task in enumerate(tasks):
            key = (task.path, task.gold)
            if key not in self.golds:
                cache_key = _cache_key(*key)
                self.golds[key] = None if cache_key is None else cache.get(cache_key)
                if self.golds[key] is None:
                    gold_job[key] = len(self.jobs)
                    self.gold_jobs[len(self.jobs)] = (key, cache_key)
                    self._add_job(key, -1, None)
            self.uses[key] += 1
            self._add_job((task.path, task.pred), t, self._shape(key, gold_job))

    def _shape(self, key: tuple[str, str], gold_job: dict) -> tuple[int, int] | int | None:
        """What a prediction's result will be compared with: the gold's shape when it is
        known, else its job (Spider only: a BIRD set can equal one of another size)."""
        gold = self.golds[key]
        if self.metric != "spider" or (gold is not None and gold.form is None):
            return None
        return gold_job[key] if gold is None else (gold.form.nrows, gold.form.ncols)

    def _add_job(self, job: tuple[str, str], owner: int, expect) -> None:
        self.jobs.append(job)
        self.owner.append(owner)
        self.expect.append(expect)

    def receive(self, job: int, result: Result) -> None:
        if self.owner[job] >= 0:
            task = self.tasks[self.owner[job]]
            key = (task.path, task.gold)
            if self.golds[key] is None:
                self.waiting.setdefault(key, []).append((self.owner[job], result))
            else:
                self._record(self.owner[job], result)
            return
        key, cache_key = self.gold_jobs.pop(job)
        self.golds[key] = result
        if cache_key is not None:
            self.cache.put(cache_key, result)
        for t, pred in self.waiting.pop(key, ()):
            self._record(t, pred)

    def _record(self, t: int, pred: Result) -> None:
        task = self.tasks[t]
        key = (task.path, task.gold)
        verdict, error = _judge(self.golds[key], pred, task.order_matters, self.metric)
        self.uses[key] -= 1
        if not self.uses[key]:
            del self.golds[key], self.uses[key]
        if not task.is_ts:
            self.exec_outcome[task.example] = (verdict, error)
        elif error in _DATABASE_ERRORS:
            self.ts_broken.add(task.example)
        else:
            self.ts_outcome[task.example].append(verdict)


class Scorer:
    """Scores (gold SQL, db_id) / predicted SQL pairs by execution and exact match.

    Args:
      db_dir: folder of `<db_id>/<db_id>.sqlite`.
      schemas: {db_id: Schema} for exact match (e.g. `kid.data.schema.load_tables`);
        a db_id missing there is read from its sqlite file. None: no exact match.
      ts_dir: test-suite folder of `<db_id>/*.sqlite`, for TS.
      metric: "spider" (test-suite EX semantics) or "bird" (set equality).
      etype: "exec" or "all" execute queries; "match" only computes exact match.
      keep_distinct: keep DISTINCT in Spider EX (the evaluator's --keep_distinct).
      value_rewrite: Spider EX replaces `value` by `1` in predictions, as the official
        evaluator does (see `kid.sql.exec_match`).
      workers, timeout, cache_bytes, **executor_options: the executor pool, and the
        size of the gold-result cache.
    """

    def __init__(
        self,
        db_dir: str | os.PathLike[str],
        *,
        schemas: Mapping[str, schema_lib.Schema] | None = None,
        ts_dir: str | os.PathLike[str] | None = None,
        metric: str = "spider",
        etype: str = "all",
        keep_distinct: bool = False,
        value_rewrite: bool = True,
        workers: int = 2,
        timeout: float = 30.0,
        cache_bytes: int = 256 << 20,
        **executor_options,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if etype not in ETYPES:
            raise ValueError(f"etype must be one of {ETYPES}, got {etype!r}")
        self.db_dir = os.fspath(db_dir)
        self.ts_dir = None if ts_dir is None else os.fspath(ts_dir)
        self.metric, self.etype = metric, etype
        self.keep_distinct, self.value_rewrite = keep_distinct, value_rewrite
        self._schemas = None if schemas is None else dict(schemas)
        self.cache = GoldCache(cache_bytes)
        self._executor = (
            Executor(workers, timeout=timeout, **executor_options) if etype != "match" else None
        )
        self._background = concurrent.futures.ThreadPoolExecutor(1, "kid-scorer")
        self._lock = threading.Lock()  # one scoring at a time: pool, cache, schemas

    def close(self) -> None:
        self._background.shutdown(wait=True)
        if self._executor is not None:
            self._executor.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(
        self, golds: Sequence[tuple[str, str]], preds: Sequence[str]
    ) -> concurrent.futures.Future[list[Verdict]]:
        """`score` in a background thread; the future holds its verdicts."""
        return self._background.submit(self.score, list(golds), list(preds))

    def score(
        self,
        golds: Sequence[tuple[str, str]],
        preds: Sequence[str],
        *,
        progress: bool = False,
    ) -> list[Verdict]:
        """Verdicts for `preds[i]` against `golds[i] = (gold SQL, db_id)`."""
        if len(golds) != len(preds):
            raise ValueError(f"{len(golds)} gold queries but {len(preds)} predictions")
        examples = [_example(g, p) for g, p in zip(golds, preds, strict=True)]
        db_ids = {e.db_id for e in examples if e.error != "invalid_db_id"}
        with self._lock:
            unreadable = self._add_schemas(db_ids)
            databases = {} if self.etype == "match" else {d: self._databases(d) for d in db_ids}
            run, failed = self._execute(examples, databases, progress)
            for i, kind in failed.items():
                examples[i] = dataclasses.replace(examples[i], error=kind)
            matches = [self._exact_match(e) for e in examples]
            levels = [_hardness(e) for e in examples]
        return [
            self._verdict(i, e, levels[i], matches[i], databases.get(e.db_id), run, unreadable)
            for i, e in enumerate(examples)
        ]

    def _verdict(self, i, example, level, match, database, run, unreadable) -> Verdict:
        """Joins one example's outcomes; the first error in order of cause is kept."""
        match, match_error = match
        exec_, ts, error = None, None, example.error
        if error == "invalid_db_id":  # counted wrong, as a failing gold query
            exec_ = None if self.etype == "match" else 0
            match = None if self._schemas is None else 0
        elif database is not None:
            main, suite = database
            if main is None:
                error = "missing_database"
            elif error is None:
                exec_, error = run.exec_outcome[i]
            else:
                exec_ = 0
            if suite:
                broken = example.error is None and i in run.ts_broken
                passes = example.error is None and exec_ != 0 and all(run.ts_outcome[i])
                ts = None if broken else int(passes)  # the main database is in the suite
                error = error or ("ts_bad_database" if broken else None)
        elif example.db_id in unreadable:
            error = error or "bad_database"
        return Verdict(i, example.db_id, level, exec_, match, ts, error or match_error)

    def db_path(self, db_id: str) -> str:
        return schema_lib.db_file(self.db_dir, db_id)

    def _databases(self, db_id: str) -> tuple[str | None, list[str]]:
        """(main database or None when missing, test-suite databases) of a db_id."""
        main = self.db_path(db_id)
        if self.ts_dir is None:
            suite = []
        else:
            folder = os.path.join(glob.escape(self.ts_dir), glob.escape(db_id))
            suite = sorted(glob.glob(os.path.join(folder, "*.sqlite")))
        return (main if os.path.isfile(main) else None), suite

    def _add_schemas(self, db_ids: set[str]) -> set[str]:
        """Reads schemas missing from the tables file from their sqlite files; returns the
        db_ids whose file could not be read (their examples get no exact match)."""
        if self._schemas is None:
            return set()
        missing = sorted(db_ids - set(self._schemas))
        absent = [d for d in missing if not os.path.isfile(self.db_path(d))]
        if absent:
            raise schema_lib.SchemaError(
                f"no schema for databases {absent}: not in the tables file and no sqlite file"
            )
        unreadable = set()
        for db_id in missing:
            try:
                self._schemas[db_id] = schema_lib.schema_from_sqlite(self.db_path(db_id), db_id)
            except Exception:  # noqa: BLE001 - a bad file costs its own examples only
                unreadable.add(db_id)
        return unreadable

    def _exact_match(self, example: _Example) -> tuple[int | None, str | None]:
        """(EM, error of the match step)."""
        schema = None if self._schemas is None else self._schemas.get(example.db_id)
        if schema is None:
            return None, None
        if example.error is not None:
            return 0, None
        try:
            return exact_match.exact_match(example.gold, example.pred, schema), None
        except spider_parse.SpiderParseError:
            return 0, None  # gold outside Spider's grammar: cannot be matched
        except Exception as e:  # noqa: BLE001 - one example's failure is its own verdict
            return 0, _error_kind(e)

    def _task_texts(self, example: _Example) -> tuple[str, str, bool]:
        if self.metric == "spider":
            return exec_match.spider_queries(
                example.gold,
                example.pred,
                keep_distinct=self.keep_distinct,
                value_rewrite=self.value_rewrite,
            )
        return example.gold, example.pred, False

    def _tasks(self, examples, databases) -> tuple[list[_Task], dict[int, str]]:
        """The tasks to run, and the error of examples that failed before running."""
        tasks, failed = [], {}
        texts: dict[str, str] = {}  # one copy of each normalized text (golds repeat)
        for i, example in enumerate(examples):
            main, suite = databases.get(example.db_id, (None, []))
            if example.error is not None or (main is None and not suite):
                continue
            try:
                gold, pred, order_matters = self._task_texts(example)
            except Exception as e:  # noqa: BLE001 - one example's failure is its own verdict
                failed[i] = _error_kind(e)
                continue
            gold, pred = texts.setdefault(gold, gold), texts.setdefault(pred, pred)
            paths = ([(main, False)] if main else []) + [(p, True) for p in suite]
            tasks += [_Task(i, p, gold, pred, order_matters, ts) for p, ts in paths]
        return tasks, failed

    def _execute(self, examples, databases, progress: bool) -> tuple[_Run, dict[int, str]]:
        """Runs every task, judging each prediction as its result comes back; also the
        error of examples that failed before running."""
        tasks, failed = self._tasks(examples, databases)
        run = _Run(tasks, self.cache, self.metric)
        if tasks:
            # disable=None: a bar only on a terminal.
            bar = tqdm.tqdm(total=len(run.jobs), disable=None if progress else True, unit="query")
            with bar:
                results = self._executor.imap_unordered(run.jobs, forms=True, expect=run.expect)
                for j, result in results:
                    bar.update()
                    run.receive(j, result)
        return run, failed
