"""Scores predicted SQL against gold SQL (CONTRACT 3).

    python -m kid.evaluate --gold GOLD --pred PRED --db-dir DIR --table TABLES \
        --etype {exec,match,all} [--metric {spider,bird}] [--ts-dir DIR] \
        [--per-example OUT.jsonl] [--timeout S] [--workers N]

GOLD holds `SQL<TAB>db_id` per line, PRED one SQL per line (line i predicts gold line
i). Prints accuracy by hardness; OUT.jsonl gets one verdict per example (fields in
`kid.sql.scoring`). The scoring itself lives in `kid.sql`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kid.data import schema as schema_lib
from kid.sql import report, scoring, sql_files


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kid.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--gold", required=True, help="file of `SQL<TAB>db_id` lines")
    p.add_argument("--pred", required=True, help="file of predicted SQL, one per gold line")
    p.add_argument("--db-dir", required=True, help="folder of <db_id>/<db_id>.sqlite")
    p.add_argument("--table", required=True, help="tables.json (schemas, for exact match)")
    p.add_argument("--etype", choices=scoring.ETYPES, default="all")
    p.add_argument("--metric", choices=scoring.METRICS, default="spider")
    p.add_argument("--ts-dir", help="test-suite folder of <db_id>/*.sqlite")
    p.add_argument("--per-example", help="write one JSON verdict per example here")
    p.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds per query")
    p.add_argument("--workers", type=_positive(int), default=2, help="executor processes")
    p.add_argument(
        "--keep-distinct", action="store_true", help="Spider EX: keep DISTINCT in both queries"
    )
    p.add_argument(
        "--no-value-rewrite",
        dest="value_rewrite",
        action="store_false",
        help="Spider EX: do not replace `value` by `1` in predictions (the official CLI does)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        golds, preds = sql_files.read_pair(args.gold, args.pred)
        schemas = schema_lib.load_tables(args.table)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
        try:
            verdicts = scorer.score(golds, preds, progress=True)
        except schema_lib.SchemaError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.per_example:
        sql_files.write_jsonl(args.per_example, (v.to_json() for v in verdicts))
    print(report.format_summary(report.summarize(verdicts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
