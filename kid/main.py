"""Entry point (CONTRACT 5): a config's stages, run in order, reported in <workdir>.

  python -m kid.main --config configs/demo.py --workdir W [--config.method=rkd ...]

Stages: benchmark (generate the embedded benchmark), teacher (train it with SFT, or load
it), student (distil it with ``config.method``), baseline (an SFT student of the same size
and budget), eval (every model on every ``eval.splits``), report (W/report.json, .md, .png).
Running the same command again resumes: finished stages are not redone, an interrupted
training continues from its latest checkpoint. The logic lives in importable functions,
so a Colab notebook can call ``run(config, workdir)``.

Exit status: 0 when done or preempted (SIGTERM: a checkpoint was saved, run again to
resume); 2 for a config that cannot run (the message names the field); 1 when training
stopped on a non-finite loss.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from kid import job, loop, stages, synth, teachers
from kid.data import jsonio

_DEMO_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEMO_CONFIG), "ml_collections config")
_WORKDIR = flags.DEFINE_string("workdir", "workdir/demo", "where outputs and the report go")

Report = dict[str, Any]


def benchmark_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    return config.benchmark.dir or os.path.join(workdir, "benchmark")


def run_benchmark(run: stages.Run) -> None:
    """Generates the embedded benchmark unless the folder already holds one; adds its stats."""
    config = run.config
    folder = benchmark_dir(config, run.workdir)
    c = config.benchmark
    if run.is_main and not os.path.exists(os.path.join(folder, "tables.json")):
        synth.generate(
            folder,
            seed=c.seed,
            sizes=synth.Sizes(**{f: c[f] for f in synth.Sizes.names() if f in c}),
            ts_copies=c.ts_copies,
            databases=tuple(c.databases),
        )
    _sync("benchmark")
    run.report["benchmark"] = synth.describe(folder)
    if run.is_main:
        print(synth.format_stats(run.report["benchmark"]))


def _sync(name: str) -> None:
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


STAGES: dict[str, Callable[[stages.Run], None]] = {
    "benchmark": run_benchmark,
    "teacher": stages.teacher,
    "student": stages.student,
    "baseline": stages.baseline,
    "eval": stages.evaluate,
    "report": stages.write_report,
}


def _data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    if "data" in config and config.data.dir:
        return config.data.dir
    return benchmark_dir(config, workdir) if "benchmark" in config else ""


def _eval_ts_dir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The embedded benchmark's test-suite copies, when no other folder is configured."""
    if "eval" in config and not config.eval.ts_dir and "benchmark" in config.stages:
        with config.unlocked():
            config.eval.ts_dir = os.path.join(benchmark_dir(config, workdir), "database_ts")


def _stage_list(stages) -> tuple[str, ...]:
    """config.stages as a tuple; a command-line override may give "benchmark,teacher"."""
    items = (stages,) if isinstance(stages, str) else tuple(stages)
    return tuple(s.strip() for item in items for s in item.split(",") if s.strip())


def _command() -> str:
    """The command line of this process, as a user would type it."""
    args = sys.argv[1:] if sys.argv and sys.argv[0].endswith("main.py") else []
    return shlex.join(["python", "-m", "kid.main", *args])


def run(config: ml_collections.ConfigDict, workdir: str) -> Report:
    """Runs `config.stages` in order; returns the report also written to workdir."""
    workdir = os.path.abspath(workdir)
    config = ml_collections.ConfigDict(config.to_dict())
    config.stages = _stage_list(config.stages)
    job.resolve_teachers(config)
    job.init_distributed(config)  # before anything starts the backend (validate's mesh)
    job.validate(config, tuple(STAGES))
    os.makedirs(workdir, exist_ok=True)
    _eval_ts_dir(config, workdir)
    if jax.process_index() == 0:  # what kid.predict / kid.export read back (prompts, decoding)
        jsonio.write_text_atomic(
            os.path.join(workdir, job.RUN_CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n"
        )
        jsonio.write_text_atomic(os.path.join(workdir, teachers.COMMAND_FILE), _command() + "\n")
    report: Report = {"stages": list(config.stages), "timings": {}, "models": {}}
    mesh = job.make_mesh(config) if "mesh" in config else None
    state = stages.Run(config, workdir, report, mesh, data_dir=_data_dir(config, workdir))
    for stage in config.stages:
        start = time.perf_counter()
        STAGES[stage](state)
        report["timings"][stage] = time.perf_counter() - start
    if "report" not in config.stages and state.is_main:
        stages.write_report(state)
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        run(_CONFIG.value, _WORKDIR.value)
    except job.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    except loop.Preempted as e:
        logging.warning("%s", e)
        print(str(e), file=sys.stderr)
        sys.exit(0)
    except loop.NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
