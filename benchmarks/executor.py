"""Executor speed on Spider dev: gold vs gold, and the pool's overhead per example.

    PYTHONPATH=. python benchmarks/executor.py [--spider-dir DIR] [--workers 2]

Prints
  1. `python -m kid.evaluate --etype all` on dev gold vs gold, as a fresh process (cold
     gold cache; interpreter start, imports and pool start included): seconds, examples/s;
  2. the same scoring in-process with `Scorer.score`, cold then warm gold cache;
  3. pool overhead per example: the dev gold queries through a one-worker pool minus the
     same queries run in this process by the worker's own code (best of 3), and the
     round trip of a trivial query.
Targets (issue 5): (1) under 15 s with 2 workers on the 2-core dev machine; (3) < 2 ms.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from kid.data import schema as schema_lib
from kid.sql import sandbox, sql_files
from kid.sql.executor import Executor
from kid.sql.scoring import Scorer

REPO = pathlib.Path(__file__).resolve().parents[1]
# (timeout s, max rows, max bytes), the same for the in-process run and the pool.
LIMITS = (30.0, 200_000, 64 << 20)


def _default_spider_dir() -> str:
    return os.environ.get("KID_SPIDER_DIR", str(REPO.parent / "shared" / "data" / "spider"))


def cli_seconds(spider: pathlib.Path, pred: str, workers: int) -> float:
    command = [sys.executable, "-m", "kid.evaluate", "--gold", str(spider / "dev_gold.sql")]
    command += ["--pred", pred, "--db-dir", str(spider / "database")]
    command += ["--table", str(spider / "tables.json"), "--etype", "all"]
    command += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def direct_seconds(jobs: list[tuple[str, str]]) -> float:
    """The jobs run in this process by the worker's code (connections already open)."""
    databases = sandbox.Databases(capacity=len({p for p, _ in jobs}))
    for path, sql in jobs:  # warm-up: open every database once
        sandbox.run_job(databases, path, sql, *LIMITS)
    start = time.perf_counter()
    for path, sql in jobs:
        sandbox.run_job(databases, path, sql, *LIMITS)
    return time.perf_counter() - start


def pool_seconds(executor: Executor, jobs: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    executor.run(jobs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider-dir", default=_default_spider_dir())
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    spider = pathlib.Path(args.spider_dir)
    golds = sql_files.read_gold(spider / "dev_gold.sql")
    n = len(golds)

    with tempfile.NamedTemporaryFile("w", suffix=".sql") as pred:
        pred.write("".join(sql + "\n" for sql, _ in golds))
        pred.flush()
        seconds = cli_seconds(spider, pred.name, args.workers)
    print(f"kid.evaluate dev gold-vs-gold --etype all, {args.workers} workers, fresh process:")
    print(f"  {seconds:.2f} s, {n / seconds:.0f} examples/s  (target < 15 s)")

    schemas = schema_lib.load_tables(spider / "tables.json")
    start = time.perf_counter()
    with Scorer(spider / "database", schemas=schemas, workers=args.workers) as scorer:
        preds = [sql for sql, _ in golds]
        cold = scorer.score(golds, preds)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        scorer.score(golds, preds)
        warm_s = time.perf_counter() - start
    scored = [v.exec for v in cold if v.exec is not None]
    print(f"Scorer.score in-process ({sum(scored)}/{len(scored)} EX, pool start included):")
    print(f"  cold gold cache {cold_s:.2f} s ({n / cold_s:.0f} examples/s), warm {warm_s:.2f} s")

    jobs = [
        (path, sql)
        for sql, db_id in golds
        if (path := schema_lib.existing_db_file(spider / "database", db_id))
    ]
    direct = min(direct_seconds(jobs) for _ in range(3))
    timeout, max_rows, max_bytes = LIMITS
    with Executor(1, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes) as executor:
        executor.run(jobs)  # warm-up: worker started, databases open
        pooled = min(pool_seconds(executor, jobs) for _ in range(3))
        trivial = [(jobs[0][0], "SELECT 1")] * 5000
        round_trip = min(pool_seconds(executor, trivial) for _ in range(3)) / len(trivial)
    overhead = (pooled - direct) / len(jobs)
    print(f"pool overhead, {len(jobs)} dev gold queries, 1 worker:")
    print(
        f"  in-process {direct * 1e3 / len(jobs):.3f} ms/example, pooled "
        f"{pooled * 1e3 / len(jobs):.3f} ms/example -> overhead {overhead * 1e3:.3f} ms/example"
        "  (target < 2 ms)"
    )
    print(f"  trivial query round trip {round_trip * 1e3:.3f} ms/example")


if __name__ == "__main__":
    main()
