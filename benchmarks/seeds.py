"""Seeds of the main job's comparison (student against its SFT baseline): per seed EX and
paired interval, then the mean and spread over seeds and one pooled paired interval.

  python benchmarks/seeds.py workdir/demo workdir/demo_s1 workdir/demo_s2 [--split S]

The pooled interval resamples the examples (the same resample for every seed and both
models) and takes the mean over seeds of each example's student - baseline verdict: seeds
share the examples, so the example is the unit that varies. An example not scored (None)
for any model of any seed is left out, as kid.sql.report does.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from kid import report


def _verdicts(workdir: str, model: str, split: str) -> list[int | None]:
    verdicts = report.read_verdicts(report.verdicts_path(workdir, model, split))
    if verdicts is None:
        raise SystemExit(f"{workdir}: no {model} verdicts on {split} (run its eval stage)")
    return [v.exec for v in verdicts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--split", default="dev_in_domain")
    args = parser.parse_args(argv)
    rows, pairs = [], []
    for workdir in args.workdirs:
        student, baseline = (_verdicts(workdir, m, args.split) for m in ("student", "baseline"))
        rows.append((workdir, report.paired_comparison(student, baseline, split=args.split)))
        pairs.append((student, baseline))
    with open(os.path.join(args.workdirs[0], "report.json"), encoding="utf-8") as f:
        method = json.load(f).get("method", "student").upper()
    print(f"{'workdir':<32}{method:>8}{'SFT':>8}{'diff':>8}   95% CI (paired bootstrap)   n")
    for workdir, c in rows:
        lo, hi = (100 * x for x in c["ci95"])
        print(
            f"{workdir:<32}{100 * c['student_ex']:8.1f}{100 * c['baseline_ex']:8.1f}"
            f"{100 * c['diff']:+8.1f}   {lo:+.1f} to {hi:+.1f}{c['n']:>16}"
        )
    student = np.array([c["student_ex"] for _, c in rows]) * 100
    baseline = np.array([c["baseline_ex"] for _, c in rows]) * 100
    print(
        f"mean over {len(rows)} seeds: {method} {student.mean():.1f} (min {student.min():.1f}, "
        f"max {student.max():.1f}, sd {student.std(ddof=1) if len(rows) > 1 else 0:.1f}); "
        f"SFT {baseline.mean():.1f} (min {baseline.min():.1f}, max {baseline.max():.1f}, "
        f"sd {baseline.std(ddof=1) if len(rows) > 1 else 0:.1f})"
    )
    scored = [i for i in range(len(pairs[0][0])) if all(None not in (s[i], b[i]) for s, b in pairs)]
    diffs = np.array([[s[i] - b[i] for i in scored] for s, b in pairs]).mean(axis=0)
    lo, hi = report.bootstrap_ci(diffs)
    print(
        f"pooled: {method} - SFT {100 * diffs.mean():+.1f} points "
        f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}, {len(scored)} examples x {len(rows)} seeds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
