"""The evaluator's parent process: peak memory (RSS) and time, on a generated 100,000-line
prediction file and on each worst case of issue 12.

    PYTHONPATH=. python benchmarks/evaluate_parent.py [--spider-dir DIR] [--lines 100000]
        [--workers 2] [--kid PATH] [--cases a,b,...]

Each case runs in a fresh process (so one case's freed memory cannot hide the next one's),
which reports seconds and the parent's peak RSS above its level once the inputs are built
(sampled every 5 ms; the workers are other processes and not counted), and the verdicts'
errors. `--kid PATH` imports kid from another checkout (e.g. `git archive HEAD` unpacked),
to measure before / after; a case that crashes there prints its exception.

Cases:
  lines      `kid.evaluate.main` on GOLD / PRED files of --lines lines: Spider dev gold
             queries on their databases, predicted as the gold, a wrong query, an empty
             line, in turn (a dev pass each), and every 10,000th a 100,001-character line;
  str10mb    one prediction holding a 10 MB quoted string;
  in5mb      one prediction with a 5 MB `IN (...)` list;
  nested300  300 nested `IN (SELECT ...)`;
  union1000  1,000 UNIONs;
  parity     8 equal-bag columns no order makes equal (the permutation search's worst case);
  columns40  40 equal-valued columns, the prediction equal;
  not_text   None, bytes and int predictions;
  waiting    a slow gold query (~1 s) and 40 predictions of 30,000-row results (~0.8 MB
             pickled, ~4 MB as rows) that wait for it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DB = "concert_singer"
GOLD = "SELECT name FROM singer"
CASES = (
    "lines",
    "str10mb",
    "in5mb",
    "nested300",
    "union1000",
    "parity",
    "columns40",
    "not_text",
    "waiting",
)


class PeakRss:
    """This process's peak RSS above its level at start, sampled every 5 ms."""

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self.base = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _parity(gold: bool) -> str:
    import itertools

    even = [r for r in itertools.product((0, 1), repeat=8) if sum(r) % 2 == 0]
    odd = [r for r in itertools.product((0, 1), repeat=8) if sum(r) % 2]
    rows = even * 2 + odd if gold else even + odd * 2
    return " UNION ALL ".join("SELECT " + ", ".join(map(str, r)) for r in rows)


def _single(name: str) -> tuple[list[tuple[str, str]], list]:
    """(golds, predictions) of a worst case on one database."""
    nested = "".join(" WHERE age IN (SELECT age FROM singer" for _ in range(300))
    big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) "
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000) "
    same = "SELECT " + ", ".join(["age"] * 40) + " FROM singer"
    cases = {
        "str10mb": [(GOLD, f"{GOLD} WHERE name = '{'x' * 10_000_000}'")],
        "in5mb": [(GOLD, f"{GOLD} WHERE age IN ({','.join(['1'] * 2_500_000)})")],
        "nested300": [(GOLD, GOLD + nested + ")" * 300)],
        "union1000": [(GOLD, " UNION ".join([GOLD] * 1000))],
        "parity": [(_parity(True), _parity(False))],
        "columns40": [(same, same)],
        "not_text": [(GOLD, None), (GOLD, b"SELECT 1"), (GOLD, 7)],
        "waiting": [(slow + "SELECT max(x) FROM c", big + "SELECT x, 'text ' || x FROM c")] * 40,
    }[name]
    return [(g, DB) for g, _ in cases], [p for _, p in cases]


def _lines_files(spider: pathlib.Path, lines: int, folder: str) -> list[str]:
    """GOLD and PRED files of `lines` lines; the CLI arguments that score them."""
    dev = [line.rstrip("\n") for line in open(spider / "dev_gold.sql") if line.strip()]
    wrong = "SELECT count(*) FROM sqlite_master"
    gold_path, pred_path = os.path.join(folder, "gold.sql"), os.path.join(folder, "pred.sql")
    with open(gold_path, "w") as gold, open(pred_path, "w") as pred:
        for i in range(lines):
            line = dev[i % len(dev)]
            gold.write(line + "\n")
            sql = [line.rpartition("\t")[0], wrong, ""][(i // len(dev)) % 3]
            pred.write(("x" * 100_001 if i % 10_000 == 1 else sql) + "\n")
    return ["--gold", gold_path, "--pred", pred_path, "--db-dir", str(spider / "database")]


def run_case(name: str, spider: pathlib.Path, lines: int, workers: int) -> dict:
    """Runs one case in this process; seconds, peak RSS growth, error counts."""
    import collections

    if name == "lines":
        from kid import evaluate

        with tempfile.TemporaryDirectory() as folder:
            argv = _lines_files(spider, lines, folder)
            argv += ["--table", str(spider / "tables.json"), "--workers", str(workers)]
            argv += ["--per-example", os.path.join(folder, "out.jsonl")]
            with PeakRss() as rss:
                start = time.perf_counter()
                code = evaluate.main(argv)
                seconds = time.perf_counter() - start
            out = [json.loads(line) for line in open(os.path.join(folder, "out.jsonl"))]
        errors = collections.Counter(r["error"] for r in out)
        return _report(seconds, rss, {"exit": code, "verdicts": len(out), **errors})
    from kid.data import schema as schema_lib
    from kid.sql.scoring import Scorer

    db_file = spider / "database" / DB / f"{DB}.sqlite"
    schemas = {DB: schema_lib.schema_from_sqlite(db_file, DB)}
    golds, preds = _single(name)
    with Scorer(spider / "database", schemas=schemas, workers=workers, timeout=10.0) as scorer:
        scorer.score([(GOLD, DB)], [GOLD])  # the pool started, the database open
        with PeakRss() as rss:
            start = time.perf_counter()
            verdicts = scorer.score(golds, preds)
            seconds = time.perf_counter() - start
    return _report(seconds, rss, collections.Counter(v.error for v in verdicts))


def _report(seconds: float, rss: PeakRss, errors: dict) -> dict:
    return {"seconds": seconds, "peak_mb": (rss.peak - rss.base) / 2**20, "errors": errors}


def _child(args: argparse.Namespace, name: str) -> str:
    """One case in a fresh interpreter, importing kid from `args.kid`."""
    command = [sys.executable, os.path.abspath(__file__), "--case", name]
    command += ["--spider-dir", args.spider_dir, "--lines", str(args.lines)]
    command += ["--workers", str(args.workers)]
    env = dict(os.environ, PYTHONPATH=args.kid)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"crashed (exit {done.returncode}): {last[:120]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    errors = ", ".join(f"{k} {n}" for k, n in sorted(result["errors"].items(), key=str))
    return f"{result['seconds']:8.2f} s  {result['peak_mb']:8.1f} MB   {errors}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider-dir", default=str(REPO.parent / "shared" / "data" / "spider"))
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kid", default=str(REPO), help="checkout to import kid from")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args()
    if args.case:
        result = run_case(args.case, pathlib.Path(args.spider_dir), args.lines, args.workers)
        print(json.dumps(result, default=str))
        return
    print(f"kid from {args.kid}; {args.workers} workers; peak = parent RSS growth")
    for name in args.cases.split(","):
        print(f"{name:10s} {_child(args, name)}", flush=True)


if __name__ == "__main__":
    main()
