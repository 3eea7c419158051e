"""Entry point (CONTRACT 5): a config's stages, run in order, reported in <workdir>.

  python -m kid.main --config configs/demo.py --workdir W [--config.benchmark.seed=1 ...]

Writes W/report.json and W/report.md. The logic lives in importable functions so a Colab
notebook can call `run(config, workdir)` directly.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from kid.data import synth

_DEMO_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEMO_CONFIG), "ml_collections config")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/demo", "where outputs and the report go")

Report = dict[str, Any]


def benchmark_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    return config.benchmark.dir or os.path.join(workdir, "benchmark")


def run_benchmark(config: ml_collections.ConfigDict, workdir: str, report: Report) -> None:
    """Generates the embedded benchmark unless the folder already holds one; adds its stats."""
    folder = benchmark_dir(config, workdir)
    c = config.benchmark
    if not os.path.exists(os.path.join(folder, "tables.json")):
        synth.generate(
            folder,
            seed=c.seed,
            sizes=synth.Sizes(c.train, c.dev, c.dev_in_domain),
            ts_copies=c.ts_copies,
        )
    report["benchmark"] = synth.describe(folder)
    print(synth.format_stats(report["benchmark"]))


STAGES: dict[str, Callable[[ml_collections.ConfigDict, str, Report], None]] = {
    "benchmark": run_benchmark,
}


def _markdown(report: Report) -> str:
    lines = ["# kid report", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {stage} | {s:.1f} |" for stage, s in report["timings"].items()]
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> Report:
    """Runs `config.stages` in order; returns the report also written to workdir."""
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"config.stages: unknown stage(s) {unknown}; known: {sorted(STAGES)}")
    os.makedirs(workdir, exist_ok=True)
    report: Report = {"stages": list(config.stages), "timings": {}}
    for stage in config.stages:
        start = time.perf_counter()
        STAGES[stage](config, workdir, report)
        report["timings"][stage] = time.perf_counter() - start
    _write_atomic(os.path.join(workdir, "report.json"), json.dumps(report, indent=2) + "\n")
    _write_atomic(os.path.join(workdir, "report.md"), _markdown(report))
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
