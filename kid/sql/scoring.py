"""Per-example verdicts (EX, TS, EM, hardness) for predicted SQL.

`Scorer` owns an executor pool and a cache of gold results; `score` is synchronous
(the `python -m kid.evaluate` CLI) and `submit` returns a future, so a trainer can
score decoded SQL while training goes on. Both give the same verdicts.

Verdict fields (CONTRACT 3): exec is the execution verdict on `db_dir/<db_id>/<db_id>
.sqlite` (None when that file is missing, error "missing_database", or when execution
was not asked for); ts is EX on every `ts_dir/<db_id>/*.sqlite` (None without
test-suite databases); match is Spider's exact set match (None without schemas);
error says why exec is not 1 when a query failed: the prediction's error kind
(`kid.sql.executor.ERRORS`), or "gold_<kind>" when the gold query itself failed
(that example counts as wrong). A result over the caps is never judged equal.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
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


@dataclasses.dataclass(frozen=True)
class _Task:
    """One prediction to run on one database, judged against its gold there."""

    example: int
    path: str
    gold: str
    pred: str
    order_matters: bool
    is_ts: bool


def _judge(gold: Result, pred: Result, order_matters: bool, metric: str) -> tuple[int, str | None]:
    if gold.error is not None:
        return 0, f"gold_{gold.error}"
    if pred.error is not None:
        return 0, pred.error
    if metric == "bird":
        return int(exec_match.bird_equal(gold.rows, pred.rows)), None
    return int(exec_match.spider_equal(gold.rows, pred.rows, order_matters)), None


def _hardness(gold: str) -> str:
    try:
        return hardness.hardness(gold)
    except spider_parse.SpiderParseError:
        return "unknown"


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
        with self._lock:
            self._add_schemas({db_id for _, db_id in golds})
            if self.etype == "match":
                exec_outcome, ts_outcome = {}, {}
            else:
                databases = {db_id: self._databases(db_id) for db_id in {d for _, d in golds}}
                exec_outcome, ts_outcome = self._execute(golds, preds, databases, progress)
            matches = self._exact_matches(golds, preds)
            levels = [_hardness(gold) for gold, _ in golds]
        verdicts = []
        for i, (_, db_id) in enumerate(golds):
            verdict, error = exec_outcome.get(i, (None, None))
            ts = ts_outcome.get(i)  # None: no test-suite database for this db_id
            verdicts.append(
                Verdict(
                    idx=i,
                    db_id=db_id,
                    hardness=levels[i],
                    exec=verdict,
                    match=matches[i],
                    ts=None if ts is None else int(all(ts)),
                    error=error,
                )
            )
        return verdicts

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

    def _add_schemas(self, db_ids: set[str]) -> None:
        """Reads schemas missing from the tables file from their sqlite files."""
        if self._schemas is None:
            return
        missing = sorted(db_ids - set(self._schemas))
        unreadable = [d for d in missing if not os.path.isfile(self.db_path(d))]
        if unreadable:
            raise schema_lib.SchemaError(
                f"no schema for databases {unreadable}: not in the tables file and no sqlite file"
            )
        self._schemas.update(schema_lib.schemas_for(missing, {}, self.db_dir))

    def _exact_matches(self, golds, preds) -> list[int | None]:
        if self._schemas is None:
            return [None] * len(golds)
        out: list[int | None] = []
        for (gold, db_id), pred in zip(golds, preds, strict=True):
            try:
                out.append(exact_match.exact_match(gold, pred, self._schemas[db_id]))
            except spider_parse.SpiderParseError:
                out.append(0)  # gold outside Spider's grammar: cannot be matched
        return out

    def _tasks(self, golds, preds, databases) -> list[_Task]:
        tasks = []
        for i, ((gold, db_id), pred) in enumerate(zip(golds, preds, strict=True)):
            if self.metric == "spider":
                gold_sql, pred_sql, order_matters = exec_match.spider_queries(
                    gold, pred, keep_distinct=self.keep_distinct, value_rewrite=self.value_rewrite
                )
            else:
                gold_sql, pred_sql, order_matters = gold, pred, False
            main, suite = databases[db_id]
            paths = ([(main, False)] if main else []) + [(p, True) for p in suite]
            tasks += [_Task(i, p, gold_sql, pred_sql, order_matters, ts) for p, ts in paths]
        return tasks

    def _execute(self, golds, preds, databases, progress: bool) -> tuple[dict, dict]:
        """{example: (exec, error)} and {example: [TS verdict per test-suite database]}."""
        tasks = self._tasks(golds, preds, databases)
        gold_results: dict[tuple[str, str], Result] = {}
        jobs: list[tuple[str, str]] = []
        gold_keys: list[tuple] = []  # cache key of gold job j, for j < len(gold_keys)
        for task in tasks:
            job = (task.path, task.gold)
            if job in gold_results:
                continue
            key = GoldCache.key(*job)
            cached = self.cache.get(key)
            gold_results[job] = cached  # None: queued
            if cached is None:
                jobs.append(job)
                gold_keys.append(key)
        jobs += [(t.path, t.pred) for t in tasks]

        exec_outcome: dict[int, tuple[int | None, str | None]] = {
            i: (None, "missing_database")
            for i, (_, db_id) in enumerate(golds)
            if databases[db_id][0] is None
        }
        ts_outcome: dict[int, list[int]] = {t.example: [] for t in tasks if t.is_ts}
        waiting: dict[tuple[str, str], list[tuple[_Task, Result]]] = collections.defaultdict(list)

        def record(task: _Task, pred: Result) -> None:
            gold = gold_results[task.path, task.gold]
            verdict, error = _judge(gold, pred, task.order_matters, self.metric)
            if task.is_ts:
                ts_outcome[task.example].append(verdict)
            else:
                exec_outcome[task.example] = (verdict, error)

        # disable=None: a bar only on a terminal.
        with tqdm.tqdm(total=len(jobs), disable=None if progress else True, unit="query") as bar:
            for j, result in self._executor.imap_unordered(jobs):
                bar.update()
                if j < len(gold_keys):
                    gold_results[jobs[j]] = result
                    self.cache.put(gold_keys[j], result)
                    for task, pred in waiting.pop(jobs[j], ()):
                        record(task, pred)
                    continue
                task = tasks[j - len(gold_keys)]
                if gold_results[task.path, task.gold] is None:
                    waiting[task.path, task.gold].append((task, result))
                else:
                    record(task, result)
        return exec_outcome, ts_outcome
