"""Scores predicted SQL against gold SQL (CONTRACT 3).

    python -m kid.evaluate --gold GOLD --pred PRED --db-dir DIR --table TABLES \\
        --etype {exec,match,all} [--metric {spider,bird}] [--ts-dir DIR] \\
        [--per-example OUT.jsonl] [--timeout S] [--workers N]

GOLD holds `SQL<TAB>db_id` per line, PRED one SQL per line (line i predicts gold line
i). Prints accuracy by hardness; OUT.jsonl gets one verdict per example (fields in
`kid.sql.scoring`). The scoring itself lives in `kid.sql`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from kid.data import schema as schema_lib
from kid.sql import report, scoring, sql_files
from kid.sql.sql_files import LineError

MAX_TIMEOUT_S = 86_400.0  # the executor's deadlines overflow near 1e10 s; a day is plenty
MAX_WORKERS = min(64, 4 * (os.cpu_count() or 1))
_WARNED_LINES = 10  # unreadable lines named on stderr per file; all are in the verdicts

_LIMITS = f"""\
limits (one bad line costs that example's verdict, never the run):
  line length  a GOLD or PRED line over {sql_files.MAX_LINE_CHARS:,} characters gets error
               too_long; reading resumes at the next newline (a line with none
               within {sql_files.MAX_SKIP_CHARS:,} characters ends the file)
  encoding     UTF-8, a leading BOM ignored; a line that is not gets not_utf8
               (in GOLD: gold_too_long / gold_not_utf8, counted wrong)
  GOLD db_id   a plain name (not empty, no / or \\, not . or ..); otherwise error
               invalid_db_id, counted wrong
  line count   PRED is read to one line past GOLD's count; a mismatch is an error
               (exit 2)
  databases    no <db_id>/<db_id>.sqlite: exec null, error missing_database; exact
               match from tables.json (null when the db_id is in neither)
"""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT_S:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {text}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be 1 to {MAX_WORKERS} (min(64, 4 x CPUs)), got {value}"
        )
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, all checked here, so that a bad one costs no scoring time."""
    p = argparse.ArgumentParser(
        prog="python -m kid.evaluate",
        description=__doc__.split("\n")[0],
        epilog=_LIMITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gold", required=True, help="file of `SQL<TAB>db_id` lines")
    p.add_argument("--pred", required=True, help="file of predicted SQL, one per gold line")
    p.add_argument("--db-dir", required=True, help="folder of <db_id>/<db_id>.sqlite")
    p.add_argument("--table", required=True, help="tables.json (schemas, for exact match)")
    p.add_argument("--etype", choices=scoring.ETYPES, default="all")
    p.add_argument("--metric", choices=scoring.METRICS, default="spider")
    p.add_argument("--ts-dir", help="test-suite folder of <db_id>/*.sqlite")
    p.add_argument("--per-example", help="write one JSON verdict per example here")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        help=f"seconds per query, in (0, {MAX_TIMEOUT_S:g}] (default %(default)g)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=2,
        help=f"executor processes, 1 to min(64, 4 x CPUs) = {MAX_WORKERS} (default %(default)s)",
    )
    p.add_argument(
        "--keep-distinct", action="store_true", help="Spider EX: keep DISTINCT in both queries"
    )
    p.add_argument(
        "--no-value-rewrite",
        dest="value_rewrite",
        action="store_false",
        help="Spider EX: do not replace `value` by `1` in predictions (the official CLI does)",
    )
    args = p.parse_args(argv)
    if args.per_example:
        try:
            sql_files.check_output(args.per_example)
        except sql_files.SqlFileError as e:
            p.error(f"argument --per-example: {e}")
    return args


def _warn_unreadable(path: str, lines: Sequence) -> None:
    """Names the first unreadable lines of a file on stderr."""
    bad = [line for line in lines if isinstance(line, LineError)]
    for e in bad[:_WARNED_LINES]:
        print(f"warning: {path}:{e.line}: {e.detail} (error {e.kind})", file=sys.stderr)
    if len(bad) > _WARNED_LINES:
        print(f"warning: {path}: {len(bad) - _WARNED_LINES} more such lines", file=sys.stderr)


def _unreadable_gold(idx: int, line: LineError, etype: str) -> scoring.Verdict:
    """A GOLD line that cannot be read counts as wrong, as a failing gold query does."""
    error = line.kind if line.kind == sql_files.INVALID_DB_ID else f"gold_{line.kind}"
    exec_ = None if etype == "match" else 0
    return scoring.Verdict(idx, line.db_id, "unknown", exec_, 0, None, error)


def _unreadable_prediction(v: scoring.Verdict, line: LineError) -> scoring.Verdict:
    """Scored as an empty prediction, then wrong wherever it was scored, with its error."""
    return dataclasses.replace(
        v,
        exec=None if v.exec is None else 0,
        match=None if v.match is None else 0,
        ts=None if v.ts is None else 0,
        error=v.error if v.error == "missing_database" else line.kind,
    )


def _without_schema(db_id: str, schemas: dict[str, schema_lib.Schema], db_dir: str) -> bool:
    """Neither in tables.json nor in --db-dir: the Scorer refuses such a db_id."""
    return db_id not in schemas and schema_lib.existing_db_file(db_dir, db_id) is None


def _score_subset(
    scorer: scoring.Scorer,
    idx: Sequence[int],
    golds: Sequence[tuple[str, str] | LineError],
    preds: Sequence[str | LineError],
    progress: bool = False,
) -> dict[int, scoring.Verdict]:
    """Verdicts of the examples `idx`, by example index."""
    subset = scorer.score(
        [golds[i] for i in idx],
        ["" if isinstance(preds[i], LineError) else preds[i] for i in idx],
        progress=progress,
    )
    out = {}
    for i, v in zip(idx, subset, strict=True):
        v = dataclasses.replace(v, idx=i)
        out[i] = _unreadable_prediction(v, preds[i]) if isinstance(preds[i], LineError) else v
    return out


def _score(
    args: argparse.Namespace,
    golds: Sequence[tuple[str, str] | LineError],
    preds: Sequence[str | LineError],
    schemas: dict[str, schema_lib.Schema],
) -> list[scoring.Verdict]:
    """One verdict per GOLD line: unreadable gold lines and db_ids with no schema at all
    are judged here, the rest by the Scorer."""
    verdicts = {
        i: _unreadable_gold(i, g, args.etype)
        for i, g in enumerate(golds)
        if isinstance(g, LineError)
    }
    readable = [i for i in range(len(golds)) if i not in verdicts]
    db_ids = {golds[i][1] for i in readable}
    no_schema = {d for d in db_ids if _without_schema(d, schemas, args.db_dir)}
    unknown = [i for i in readable if golds[i][1] in no_schema]
    known = [i for i in readable if golds[i][1] not in no_schema]
    if unknown:  # Scorer.score refuses them (SchemaError); without schemas or a pool it
        # gives their hardness only
        with scoring.Scorer(args.db_dir, etype="match") as hardness_only:
            for i, v in _score_subset(hardness_only, unknown, golds, preds).items():
                verdicts[i] = dataclasses.replace(v, error="missing_database")
    with scoring.Scorer(
        args.db_dir,
        schemas=schemas,
        ts_dir=args.ts_dir,
        metric=args.metric,
        etype=args.etype,
        keep_distinct=args.keep_distinct,
        value_rewrite=args.value_rewrite,
        workers=args.workers,
        timeout=args.timeout,
    ) as scorer:
        verdicts |= _score_subset(scorer, known, golds, preds, progress=True)
    return [verdicts[i] for i in range(len(golds))]


def _fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        golds, preds = sql_files.read_pair(args.gold, args.pred)
        tables = schema_lib.read_tables(args.table)
    except (OSError, ValueError) as e:
        return _fail(e)
    for problem in tables.problems:  # a refused entry: its schema comes from its sqlite file
        print(f"warning: {problem}", file=sys.stderr)
    _warn_unreadable(args.gold, golds)
    _warn_unreadable(args.pred, preds)
    try:
        verdicts = _score(args, golds, preds, tables.schemas)
    except schema_lib.SchemaError as e:
        return _fail(e)
    print(report.format_summary(report.summarize(verdicts)))
    if args.per_example:
        try:
            sql_files.write_jsonl(args.per_example, (v.to_json() for v in verdicts))
        except OSError as e:
            return _fail(f"cannot write {args.per_example}: {e.strerror or e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
