"""`python -m kid.synth --out DIR [--seed N] [--size T,D,I] [--databases T,D] [--ts-copies K] [--stats]`."""

from __future__ import annotations

import argparse
import sys
import time

from kid.synth import build, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kid.synth",
        description="Writes the embedded synthetic text-to-SQL benchmark in Spider format.",
    )
    parser.add_argument(
        "--out", required=True, help="folder to write (an earlier benchmark there is replaced)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        type=build.Sizes.parse,
        default=build.Sizes(),
        help="examples in TRAIN,DEV,DEV_IN_DOMAIN[,VAL_IN_DOMAIN] (default 6000,600,600,300)",
    )
    parser.add_argument(
        "--databases",
        type=build.parse_databases,
        default=build.DATABASES,
        help="databases in TRAIN,DEV, renamed variants of the domains (default 100,20)",
    )
    parser.add_argument("--ts-copies", type=int, default=3, help="test-suite copies per database")
    parser.add_argument("--stats", action="store_true", help="print the benchmark's statistics")
    args = parser.parse_args(argv)
    if args.ts_copies < 0:
        parser.error("--ts-copies must be >= 0")
    start = time.perf_counter()
    build.generate(
        args.out,
        seed=args.seed,
        sizes=args.size,
        ts_copies=args.ts_copies,
        databases=args.databases,
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out} in {elapsed:.1f} s")
    if args.stats:
        print(stats.format_stats(stats.describe(args.out), generation_s=elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
