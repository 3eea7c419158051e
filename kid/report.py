"""The run report (CONTRACT 5): W/report.json, W/report.md and the training curves W/report.png.

The report dict is built by `kid.main`'s stages:
  {"eval": {model: {split: {"ex", "em", "ts", "n", "by_hardness": {level: {...}}, ...}}},
   "models": {model: {"params", "train_s", "steps", "tokens", ...}},
   "method": str, "timings": {stage: seconds}, "benchmark": {...}, ...}
with ex / em / ts fractions in [0, 1] (None where nothing was scored). report.md leads with
the answer to the first question a reader has: did the distilled student beat the plain
fine-tuned baseline of the same size and budget? An EX gap of a point or two on a few
hundred examples is within noise, so where both were evaluated `write_report` adds
report["comparison"] (CONTRACT 5): the gap with a 95% interval from a paired bootstrap
over the per-example verdicts in W/<model>/eval/<split>.jsonl (CONTRACT 3's format, written
by the eval stage), and report.md's first line states it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kid import metrics_log
from kid.data import jsonio
from kid.sql import report as sql_report
from kid.sql.scoring import LEVELS, Verdict

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
_MODEL_ORDER = ("teacher", "baseline", "student")  # listed first, in this order
_COMPARED_SPLIT = "dev_in_domain"  # the split the comparison prefers, where both have it
_log = logging.getLogger(__name__)


def _level_metrics(level: Mapping[str, Any]) -> dict:
    return {
        "ex": level["exec"],
        "em": level["match"],
        "ts": level["ts"],
        "n": level["count"],
        "ex_n": level["exec_n"],
        "em_n": level["match_n"],
        "ts_n": level["ts_n"],
    }


def summarize_verdicts(verdicts: Sequence[Verdict]) -> dict:
    """One split's report entry from its verdicts, with `python -m kid.evaluate`'s numbers.

    {"ex", "em", "ts", "n", "ex_n", "em_n", "ts_n", "by_hardness": {level: same keys},
    "errors": {kind: count}, "missing_database": {db_id: count}}. Conventions are those of
    `kid.sql.report.summarize`: a failed query or a failed gold counts wrong (0); a metric
    not scored for an example (exec on a missing database, em without a schema, ts without
    test-suite databases) leaves it out of that mean, so ex_n / em_n / ts_n say how many
    were scored; a mean over nothing is None (ts is None when no verdict has a ts).
    """
    summary = sql_report.summarize(verdicts)
    levels = summary["levels"]
    return {
        **_level_metrics(levels["all"]),
        "by_hardness": {k: _level_metrics(v) for k, v in levels.items() if k != "all"},
        "errors": summary["errors"],
        "missing_database": summary["missing_database"],
    }


def verdicts_path(workdir: str, model: str, split: str) -> str:
    """W/<model>/eval/<split>.jsonl: one model's per-example verdicts on a split."""
    return os.path.join(workdir, model, "eval", f"{split}.jsonl")


def read_verdicts(path: str) -> list[Verdict] | None:
    """The verdicts of a CONTRACT 3 per-example file, in order; None when there is none."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [Verdict(**json.loads(line)) for line in f if line.strip()]


def bootstrap_ci(
    per_example: np.ndarray, *, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """The 2.5 / 97.5 percentile interval of the mean of per-example values [n] over
    `n_boot` resamples of the examples with replacement (deterministic for a seed)."""
    values = np.asarray(per_example, dtype=np.float64)
    n = len(values)
    resamples = np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int32)
    lo, hi = np.percentile(values[resamples].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def paired_comparison(
    student_exec: Sequence[int | None],
    baseline_exec: Sequence[int | None],
    *,
    split: str,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict:
    """Student vs baseline EX on the same examples, with the uncertainty of the gap.

    {"split", "student_ex", "baseline_ex", "diff" (student - baseline), "ci95": [lo, hi],
    "both", "student_only", "baseline_only", "neither" (right-answer counts), "n"}, EX as
    fractions. The EX convention is `kid.sql.report.summarize`'s: a None verdict (not
    scored: missing or unreadable database) is left out, not counted wrong, so an example
    None for either model is dropped and n counts the others; the EXs then equal the
    report's wherever the two models' None verdicts coincide (they share the databases).
    ci95 is the 2.5 / 97.5 percentile interval of the gap over `n_boot` resamples of the
    examples with replacement, the same resample for both models (pairing cancels the
    difficulty of examples both models share, so the interval is far narrower than two
    independent ones). Deterministic for a seed; ValueError when no example is scored for
    both.
    """
    pairs = np.array(
        [(s, b) for s, b in zip(student_exec, baseline_exec, strict=True) if None not in (s, b)],
        dtype=np.int8,
    ).reshape(-1, 2)
    n = len(pairs)
    if n == 0:
        raise ValueError(f"{split}: no example scored for both student and baseline")
    student, baseline = pairs.T
    lo, hi = bootstrap_ci(student - baseline, n_boot=n_boot, seed=seed)
    return {
        "split": split,
        "student_ex": float(student.mean()),
        "baseline_ex": float(baseline.mean()),
        "diff": float(student.mean() - baseline.mean()),
        "ci95": [lo, hi],
        "both": int(np.sum(student & baseline)),
        "student_only": int(np.sum(student > baseline)),
        "baseline_only": int(np.sum(student < baseline)),
        "neither": int(np.sum((student | baseline) == 0)),
        "n": n,
    }


def _comparison_split(evals: Mapping) -> str | None:
    """dev_in_domain where student and baseline both have it, else the student's first
    split that the baseline has too."""
    shared = [s for s in evals.get("student", {}) if s in evals.get("baseline", {})]
    if not shared:
        return None
    return _COMPARED_SPLIT if _COMPARED_SPLIT in shared else shared[0]


def comparison(workdir: str, report: Mapping) -> dict | None:
    """`paired_comparison` of student and baseline from their verdict files in workdir;
    None (no comparison, not a failed report) when a file is missing, the two files are not
    of the same examples, or no example was scored for both."""
    split = _comparison_split(report.get("eval", {}))
    if split is None:
        return None
    files = [verdicts_path(workdir, m, split) for m in ("student", "baseline")]
    student, baseline = (read_verdicts(f) for f in files)
    if student is None or baseline is None:
        return None
    if [(v.idx, v.db_id) for v in student] != [(v.idx, v.db_id) for v in baseline]:
        _log.warning("no comparison: %s and %s hold different examples", *files)
        return None
    if all(None in (s.exec, b.exec) for s, b in zip(student, baseline, strict=True)):
        return None
    return paired_comparison([v.exec for v in student], [v.exec for v in baseline], split=split)


def _jsonable(obj: Any) -> Any:
    """`obj` with numpy / jax scalars as Python numbers and NaN / inf as None (valid JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return metrics_log.json_value(obj)


def model_names(report: Mapping) -> list[str]:
    """Models in the report (eval or models), teacher, baseline, student first."""
    names = dict.fromkeys([*report.get("eval", {}), *report.get("models", {})])
    return [m for m in _MODEL_ORDER if m in names] + [m for m in names if m not in _MODEL_ORDER]


def _logged_models(workdir: str) -> list[str]:
    """Subfolders of workdir that hold a metrics.jsonl, sorted."""
    if not os.path.isdir(workdir):
        return []
    return sorted(
        d
        for d in os.listdir(workdir)
        if os.path.isfile(os.path.join(workdir, d, metrics_log.METRICS_FILE))
    )


def write_report(workdir: str, report: Mapping) -> None:
    """Writes report.json (atomically; with "comparison" where `comparison` gives one),
    report.png (when any model logged metrics) and report.md in workdir."""
    os.makedirs(workdir, exist_ok=True)
    report = _jsonable(report)
    if (paired := comparison(workdir, report)) is not None:
        report["comparison"] = paired
    jsonio.write_text_atomic(
        os.path.join(workdir, REPORT_JSON), json.dumps(report, indent=2) + "\n"
    )
    models = list(dict.fromkeys([*model_names(report), *_logged_models(workdir)]))
    plotted = plot_curves(workdir, models, os.path.join(workdir, REPORT_PNG))
    text = markdown(report, plot=REPORT_PNG if plotted else None)
    jsonio.write_text_atomic(os.path.join(workdir, REPORT_MD), text)


# --- report.md ---------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _count(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """A markdown table; the first `left` columns left-aligned, the rest right-aligned."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return [f"| {' | '.join(row)} |" for row in (header, align, *rows)]


def _splits(evals: Mapping) -> list[str]:
    return list(dict.fromkeys(s for per_model in evals.values() for s in per_model))


def _points(fraction: float) -> str:
    """A signed gap in percentage points, "+1.7" (never "-0.0")."""
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"


def _comparison_line(report: Mapping) -> str:
    """The answer with its uncertainty, from report["comparison"]; the method from the
    student's own record where the student stage did not run (an eval-only resume)."""
    c = report["comparison"]
    split = c["split"]
    student = report.get("models", {}).get("student", {})
    method = (report.get("method") or student.get("method", "")).upper()
    line = (
        f"{method} student {_percent(c['student_ex'])} vs SFT baseline "
        f"{_percent(c['baseline_ex'])} EX on {split}: {_points(c['diff'])} points "
        f"(95% CI {_points(c['ci95'][0])} to {_points(c['ci95'][1])}, "
        f"paired bootstrap over {c['n']} examples)"
    ).lstrip()
    teacher = report.get("eval", {}).get("teacher", {}).get(split, {}).get("ex")
    return line if teacher is None else f"{line}; teacher {_percent(teacher)}"


def answer(report: Mapping) -> str | None:
    """The line that answers "did distillation beat plain fine-tuning?". With a comparison:
    student and baseline EX on its split, the gap in points with its 95% interval, and the
    teacher's EX there. Without one: student EX on dev (else its first split): X% vs
    baseline Y% vs teacher Z%, and the gain in points."""
    if "comparison" in report:
        return _comparison_line(report)
    evals = report.get("eval", {})
    student = evals.get("student")
    if not student:
        return None
    split = "dev" if "dev" in student else next(iter(student))
    ex = {"student": student[split].get("ex")}
    for other in ("baseline", "teacher"):
        if split in evals.get(other, {}):
            ex[other] = evals[other][split].get("ex")
    line = f"student EX on {split}: {_percent(ex['student'])}"
    line += "".join(f" vs {m} {_percent(x)}" for m, x in ex.items() if m != "student")
    if ex["student"] is not None and ex.get("baseline") is not None:
        gain = round(100 * ex["student"], 1) - round(100 * ex["baseline"], 1)
        line += f" (student - baseline: {gain:+.1f} points)"
    return line


def _paired_table(c: Mapping) -> list[str]:
    """How the compared split's examples fall: right for both, one or neither model."""
    header = ["both right", "student only", "baseline only", "neither", "n"]
    keys = ("both", "student_only", "baseline_only", "neither", "n")
    return _table(header, [[_count(c[k]) for k in keys]], left=0)


def _eval_table(evals: Mapping, models: Sequence[str]) -> list[str]:
    rows = [
        [m, split, _pct(r.get("ex")), _pct(r.get("em")), _pct(r.get("ts")), _count(r.get("n"))]
        for m in models
        for split, r in evals.get(m, {}).items()
    ]
    return _table(["model", "split", "EX %", "EM %", "TS %", "n"], rows, left=2)


def _hardness_table(evals: Mapping, models: Sequence[str], split: str) -> list[str]:
    """Rows n / EX / EM (/ TS where scored) per model, hardness levels as columns."""
    entries = {m: evals[m][split] for m in models if split in evals.get(m, {})}
    entries = {m: r for m, r in entries.items() if r.get("by_hardness")}
    if not entries:
        return []
    present = {lv for r in entries.values() for lv, s in r["by_hardness"].items() if s.get("n")}
    levels = [lv for lv in LEVELS if lv != "unknown" or "unknown" in present]
    rows = []
    for m, r in entries.items():
        cells = [r["by_hardness"].get(lv, {}) for lv in levels] + [r]
        rows.append([m, "n", *(_count(c.get("n")) for c in cells)])
        for key, label in (("ex", "EX %"), ("em", "EM %"), ("ts", "TS %")):
            if key == "ts" and all(c.get("ts") is None for c in cells):
                continue
            rows.append([m, label, *(_pct(c.get(key)) for c in cells)])
    return _table(["model", "", *levels, "all"], rows, left=2)


def _models_table(models_info: Mapping, models: Sequence[str]) -> list[str]:
    rows = [
        [
            m,
            _count(info.get("params")),
            _count(info.get("steps")),
            _count(info.get("tokens")),
            _duration(info.get("train_s")),
        ]
        for m in models
        if (info := models_info.get(m)) is not None
    ]
    return _table(["model", "params", "steps", "tokens", "train time"], rows)


def _benchmark_text(benchmark: Mapping) -> str:
    """The embedded benchmark's stats as `kid.synth` prints them, else as JSON."""
    if {"databases", "splits"} <= benchmark.keys():
        from kid import synth  # deferred: only reports of embedded-benchmark runs

        return synth.format_stats(dict(benchmark))
    return json.dumps(benchmark, indent=2)


def markdown(report: Mapping, *, plot: str | None) -> str:
    """report.md: the answer line (its first line where there is a comparison, followed by
    the paired counts; else under a title), EX / EM / TS per model and split, the same by
    hardness, the models, the stage timings and the training-curve plot (`plot`, a path
    relative to report.md, or None)."""
    evals = report.get("eval", {})
    models = model_names(report)
    line = answer(report)
    if "comparison" in report:
        lines = [line, "", *_paired_table(report["comparison"]), ""]
    else:
        lines = ["# kid report", "", *([f"**{line}**", ""] if line is not None else [])]
    if "method" in report:
        lines += [f"method: `{report['method']}`", ""]
    if evals:
        lines += ["## Accuracy", "", *_eval_table(evals, models), ""]
        for split in _splits(evals):
            table = _hardness_table(evals, models, split)
            if table:
                lines += [f"### {split} by hardness", "", *table, ""]
    if report.get("models"):
        lines += ["## Models", "", *_models_table(report["models"], models), ""]
    if report.get("timings"):
        rows = [[stage, f"{s:.1f}"] for stage, s in report["timings"].items()]
        lines += ["## Timings", "", *_table(["stage", "seconds"], rows), ""]
    if report.get("benchmark"):
        lines += ["## Benchmark", "", "```", _benchmark_text(report["benchmark"]), "```", ""]
    if plot is not None:
        lines += ["## Training curves", "", f"![]({plot})", ""]
    return "\n".join(lines)


# --- report.png --------------------------------------------------------------------------


def is_ex_key(key: str) -> bool:
    """An execution-accuracy metric in metrics.jsonl: "ex", or a name ending in "/ex" or
    "_ex" ("dev/ex", "dev_in_domain/ex"); not any name ending in the letters ex ("index")."""
    return key == "ex" or key.endswith(("/ex", "_ex"))


def curves(records: Sequence[Mapping]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series for "loss" and every EX key, from metrics.jsonl records; nulls
    (non-finite values) and non-numbers are left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        step = r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for key, value in r.items():
            if key != "loss" and not is_ex_key(key):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(workdir: str, models: Sequence[str], path: str) -> bool:
    """Writes a PNG (headless Agg) of training loss vs step and EX (%) vs step, one line per
    model (and EX key), from W/<model>/metrics.jsonl; False, writing nothing, when there is
    no loss or EX value to plot."""
    data = {}
    for m in models:
        file = os.path.join(workdir, m, metrics_log.METRICS_FILE)
        if os.path.isfile(file) and (series := curves(metrics_log.read_metrics(file))):
            data[m] = series
    if not data:
        return False

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: slow import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, ex_ax = fig.subplots(1, 2)
    for i, (m, series) in enumerate(data.items()):
        color = f"C{i % 10}"
        if "loss" in series:
            loss_ax.plot(*zip(*series["loss"], strict=True), color=color, label=m)
        ex_keys = [k for k in series if k != "loss"]
        for j, key in enumerate(ex_keys):
            steps, values = zip(*series[key], strict=True)
            label = m if key == "ex" else f"{m} {key}"
            style = ("-", "--", ":", "-.")[j % 4]
            ex_ax.plot(steps, [100 * v for v in values], style, color=color, label=label)
            ex_ax.scatter(steps, [100 * v for v in values], color=color, s=8)
    for ax, title, ylabel in ((loss_ax, "training loss", "loss"), (ex_ax, "EX", "EX %")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    tmp = f"{path}.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return True
