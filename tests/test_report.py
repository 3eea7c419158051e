import json
import os

import numpy as np
import pytest

from kid import report as report_lib
from kid.metrics_log import MetricsLog
from kid.sql.scoring import Verdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _verdict(idx, hardness, exec_, match, ts, error=None, db_id="db"):
    return Verdict(idx, db_id, hardness, exec_, match, ts, error)


def test_summarize_verdicts_hand_computed():
    verdicts = [
        _verdict(0, "easy", 1, 1, 1),
        _verdict(1, "easy", 0, 1, 0, "sql_error"),
        _verdict(2, "medium", 1, 0, None),
        _verdict(3, "hard", None, 0, None, "missing_database", db_id="gone"),
        _verdict(4, "extra", 0, 0, 0, "gold_timeout"),
    ]
    s = report_lib.summarize_verdicts(verdicts)
    # exec scored on 4 (the missing database is left out): 2/4; match on 5: 2/5; ts on 3: 1/3
    assert (s["ex"], s["em"], s["n"], s["ex_n"], s["em_n"], s["ts_n"]) == (0.5, 0.4, 5, 4, 5, 3)
    assert s["ts"] == pytest.approx(1 / 3)
    by = s["by_hardness"]
    assert set(by) == {"easy", "medium", "hard", "extra"}
    assert [by["easy"][k] for k in ("ex", "em", "ts", "n")] == [0.5, 1.0, 0.5, 2]
    assert (by["medium"]["ex"], by["medium"]["em"], by["medium"]["ts"]) == (1.0, 0.0, None)
    assert (by["hard"]["ex"], by["hard"]["em"], by["hard"]["n"]) == (None, 0.0, 1)
    assert (by["extra"]["ex"], by["extra"]["ts"]) == (0.0, 0.0)
    assert s["errors"] == {"sql_error": 1, "gold_timeout": 1}
    assert s["missing_database"] == {"gone": 1}


def test_summarize_verdicts_ts_null_without_ts():
    s = report_lib.summarize_verdicts([_verdict(0, "easy", 1, 1, None)])
    assert (s["ex"], s["em"], s["ts"]) == (1.0, 1.0, None)


def _split(ex, em, ts, n, by_ex):
    by = {
        lv: {"ex": x, "em": em, "ts": None, "n": n // 4}
        for lv, x in zip(("easy", "medium", "hard", "extra"), by_ex, strict=True)
    }
    return {"ex": ex, "em": em, "ts": ts, "n": n, "by_hardness": by}


def _report():
    return {
        "eval": {
            "student": {
                "dev": _split(0.612, 0.5, 0.58, 200, (0.8, 0.6, 0.4, 0.2)),
                "dev_in_domain": _split(0.7, 0.6, None, 100, (0.9, 0.7, 0.5, 0.3)),
            },
            "baseline": {"dev": _split(0.55, 0.45, 0.5, 200, (0.7, 0.5, 0.3, 0.1))},
            "teacher": {"dev": _split(0.701, 0.65, 0.68, 200, (0.9, 0.8, 0.6, 0.4))},
        },
        "models": {
            "student": {"params": 1234567, "train_s": 95.25, "steps": 300, "tokens": 45000},
            "baseline": {"params": 1234567, "train_s": 80.0, "steps": 300, "tokens": 45000},
        },
        "method": "kid",
        "timings": {"benchmark": 1.25, "student": 95.3, "eval": 3.0},
    }


def test_markdown_holds_the_numbers():
    md = report_lib.markdown(_report(), plot=None)
    assert (
        "student EX on dev: 61.2% vs baseline 55.0% vs teacher 70.1% "
        "(student - baseline: +6.2 points)"
    ) in md
    assert "| student | dev | 61.2 | 50.0 | 58.0 | 200 |" in md
    assert "| student | dev_in_domain | 70.0 | 60.0 | - | 100 |" in md
    assert md.index("| teacher | dev |") < md.index("| baseline | dev |") < md.index("| student")
    assert "### dev by hardness" in md and "### dev_in_domain by hardness" in md
    assert "| model |  | easy | medium | hard | extra | all |" in md
    assert "| student | EX % | 80.0 | 60.0 | 40.0 | 20.0 | 61.2 |" in md
    assert "| baseline | n | 50 | 50 | 50 | 50 | 200 |" in md
    assert "| student | TS % | - | - | - | - | 58.0 |" in md
    assert "| student | 1,234,567 | 300 | 45,000 | 95.2 s |" in md
    assert "| benchmark | 1.2 |" in md and "| eval | 3.0 |" in md
    assert "method: `kid`" in md
    assert "report.png" not in md


def test_answer_without_baseline_and_without_student():
    report = _report()
    del report["eval"]["baseline"]
    assert report_lib.answer(report) == "student EX on dev: 61.2% vs teacher 70.1%"
    del report["eval"]["student"]
    assert report_lib.answer(report) is None
    assert "student EX" not in report_lib.markdown(report, plot=None)


def test_write_report_with_curves(tmp_path):
    for model, steps in (("student", 6), ("baseline", 4)):
        with MetricsLog(tmp_path / model, tensorboard=False) as log:
            for step in range(1, steps + 1):
                metrics = {"loss": 2.0 / step}
                if step % 2 == 0:
                    metrics |= {"dev/ex": 0.1 * step, "ex": 0.05 * step}
                log.write(step, metrics)
    report = _report()
    report["models"]["student"]["loss_last"] = np.float32("nan")  # not JSON: written as null
    report_lib.write_report(str(tmp_path), report)

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["models"]["student"]["loss_last"] is None
    assert on_disk["eval"]["student"]["dev"]["ex"] == 0.612
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG_MAGIC
    md = (tmp_path / "report.md").read_text()
    assert "![](report.png)" in md and "61.2%" in md
    assert not list(tmp_path.glob("*.tmp"))


def test_write_report_without_metrics_has_no_plot(tmp_path):
    report_lib.write_report(str(tmp_path), _report())
    assert not (tmp_path / "report.png").exists()
    assert "report.png" not in (tmp_path / "report.md").read_text()
    assert report_lib.plot_curves(str(tmp_path), ["student"], str(tmp_path / "x.png")) is False


def test_curves_keeps_loss_and_ex_keys():
    records = [
        {"step": 1, "loss": 1.5, "index": 3, "dev/ex": None},
        {"step": 2, "restored": True},
        {"step": 3, "loss": 1, "dev/ex": 0.5, "dev_in_domain_ex": 0.25, "lr": 0.1},
    ]
    assert report_lib.curves(records) == {
        "loss": [(1, 1.5), (3, 1.0)],
        "dev/ex": [(3, 0.5)],
        "dev_in_domain_ex": [(3, 0.25)],
    }
    assert not report_lib.is_ex_key("index") and report_lib.is_ex_key("ex")


# --- the paired comparison ---------------------------------------------------------------

COMPARISON_KEYS = {
    "split",
    "student_ex",
    "baseline_ex",
    "diff",
    "ci95",
    "both",
    "student_only",
    "baseline_only",
    "neither",
    "n",
}


def _paired_exec(both, student_only, baseline_only, neither, seed=0):
    """Student and baseline exec verdicts with these paired counts, in a shuffled order."""
    student = [1] * (both + student_only) + [0] * (baseline_only + neither)
    baseline = [1] * both + [0] * student_only + [1] * baseline_only + [0] * neither
    order = np.random.default_rng(seed).permutation(len(student))
    return [student[i] for i in order], [baseline[i] for i in order]


def test_paired_comparison_counts_and_estimates():
    student, baseline = _paired_exec(60, 9, 4, 227)
    # unscorable examples (None for either model) are left out, as kid's EX leaves them out
    student += [None, None, 1]
    baseline += [None, 1, None]
    c = report_lib.paired_comparison(student, baseline, split="dev_in_domain")
    assert set(c) == COMPARISON_KEYS
    assert (c["split"], c["n"]) == ("dev_in_domain", 300)
    assert (c["both"], c["student_only"], c["baseline_only"], c["neither"]) == (60, 9, 4, 227)
    assert c["student_ex"] == pytest.approx(69 / 300)
    assert c["baseline_ex"] == pytest.approx(64 / 300)
    assert c["diff"] == pytest.approx(5 / 300)
    assert c == report_lib.paired_comparison(student, baseline, split="dev_in_domain")


@pytest.mark.parametrize("counts", [(60, 9, 4, 227), (60, 40, 5, 195), (50, 20, 20, 210)])
def test_paired_comparison_interval_matches_scipy_paired_bootstrap(counts):
    from scipy import stats

    student, baseline = _paired_exec(*counts)
    c = report_lib.paired_comparison(student, baseline, split="dev")
    reference = stats.bootstrap(
        (np.array(student), np.array(baseline)),
        lambda s, b, axis: s.mean(axis) - b.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(1),
    ).confidence_interval
    # Monte Carlo error is about half a grid step (1 / n) here; an unpaired interval would
    # be about three times as wide
    assert c["ci95"] == pytest.approx([reference.low, reference.high], abs=2 / 300)


def test_paired_comparison_interval_excludes_or_includes_zero():
    lo, hi = report_lib.paired_comparison(*_paired_exec(60, 40, 5, 195), split="dev")["ci95"]
    assert 0 < lo < 35 / 300 < hi  # 40 vs 5 discordant: a real gain
    lo, hi = report_lib.paired_comparison(*_paired_exec(60, 9, 4, 227), split="dev")["ci95"]
    assert lo < 0 < 5 / 300 < hi  # 9 vs 4: within noise


def test_paired_comparison_same_verdicts_have_no_spread():
    """Resampling both models with the same examples: identical verdicts never differ."""
    student, _ = _paired_exec(60, 40, 5, 195)
    c = report_lib.paired_comparison(student, student, split="dev", n_boot=500, seed=3)
    assert (c["diff"], c["ci95"], c["student_only"], c["baseline_only"]) == (0, [0, 0], 0, 0)


def test_paired_comparison_refuses_nothing_to_compare():
    with pytest.raises(ValueError, match="no example scored"):
        report_lib.paired_comparison([None, 1], [0, None], split="dev")
    with pytest.raises(ValueError):
        report_lib.paired_comparison([1, 0], [1], split="dev")


def _with_comparison(report, *, teacher=0.66):
    report["eval"]["teacher"]["dev_in_domain"] = _split(teacher, 0.5, None, 300, (1, 1, 1, 1))
    report["comparison"] = {
        "split": "dev_in_domain",
        "student_ex": 69 / 300,
        "baseline_ex": 64 / 300,
        "diff": 5 / 300,
        "ci95": [-0.023, 0.057],
        "both": 60,
        "student_only": 9,
        "baseline_only": 4,
        "neither": 227,
        "n": 300,
    }
    return report


def test_markdown_leads_with_the_comparison():
    md = report_lib.markdown(_with_comparison(_report()), plot="report.png").splitlines()
    assert md[0] == (
        "KID student 23.0% vs SFT baseline 21.3% EX on dev_in_domain: +1.7 points "
        "(95% CI -2.3 to +5.7, paired bootstrap over 300 examples); teacher 66.0%"
    )
    table = md[md.index("| both right | student only | baseline only | neither | n |") :]
    assert table[2] == "| 60 | 9 | 4 | 227 | 300 |"
    text = "\n".join(md)
    assert "| student | EX % | 80.0 | 60.0 | 40.0 | 20.0 | 61.2 |" in text  # the tables follow
    assert text.index("both right") < text.index("## Accuracy") < text.index("![](report.png)")
    assert "# kid report" not in text and "student EX on dev" not in text


def test_comparison_line_without_teacher_and_without_method():
    report = _with_comparison(_report())
    del report["eval"]["teacher"]["dev_in_domain"]
    report["method"] = "rkd"
    assert report_lib.answer(report).endswith("over 300 examples)")
    assert report_lib.answer(report).startswith("RKD student 23.0% vs SFT baseline 21.3%")
    del report["method"]  # an eval-only resume: the student's own record names it
    report["models"]["student"]["method"] = "kid"
    assert report_lib.answer(report).startswith("KID student 23.0%")
    report["comparison"]["diff"], report["comparison"]["ci95"] = -1e-17, [-0.0004, 0.0]
    assert "EX on dev_in_domain: +0.0 points (95% CI +0.0 to +0.0," in report_lib.answer(report)


def _write_verdicts(workdir, model, split, exec_):
    from kid.sql import sql_files

    folder = workdir / model / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    verdicts = [_verdict(i, "easy", x, x, None, db_id=f"db{i % 3}") for i, x in enumerate(exec_)]
    sql_files.write_jsonl(folder / f"{split}.jsonl", (v.to_json() for v in verdicts))


def test_write_report_compares_from_the_verdict_files(tmp_path):
    student, baseline = _paired_exec(60, 40, 5, 195)
    report = _report()  # the baseline has dev only: compared there, not on dev_in_domain
    _write_verdicts(tmp_path, "student", "dev", student)
    _write_verdicts(tmp_path, "baseline", "dev", baseline)
    report_lib.write_report(str(tmp_path), report)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert set(on_disk) == {"eval", "models", "method", "timings", "comparison"}
    assert set(on_disk["comparison"]) == COMPARISON_KEYS
    assert on_disk["comparison"] == report_lib.paired_comparison(student, baseline, split="dev")
    first = (tmp_path / "report.md").read_text().splitlines()[0]
    assert first.startswith("KID student 33.3% vs SFT baseline 21.7% EX on dev: +11.7 points")
    assert first.endswith("paired bootstrap over 300 examples); teacher 70.1%")
    assert "comparison" not in report  # the caller's dict is left as it was


def test_comparison_prefers_dev_in_domain(tmp_path):
    report = _report()
    report["eval"]["baseline"]["dev_in_domain"] = _split(0.6, 0.5, None, 100, (1, 1, 1, 1))
    for split, (student, baseline) in (
        ("dev", _paired_exec(1, 1, 1, 1)),
        ("dev_in_domain", _paired_exec(10, 5, 0, 5)),
    ):
        _write_verdicts(tmp_path, "student", split, student)
        _write_verdicts(tmp_path, "baseline", split, baseline)
    c = report_lib.comparison(str(tmp_path), report)
    assert (c["split"], c["n"], c["student_only"]) == ("dev_in_domain", 20, 5)


def test_no_comparison_without_both_verdict_files(tmp_path):
    report = _report()
    report_lib.write_report(str(tmp_path), report)
    assert "comparison" not in json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# kid report\n\n**student EX on dev: 61.2% vs baseline 55.0%")
    _write_verdicts(tmp_path, "student", "dev", [1, 0, 1])  # the baseline's is missing
    assert report_lib.comparison(str(tmp_path), report) is None
    _write_verdicts(tmp_path, "baseline", "dev", [1, 0])  # not the same examples
    assert report_lib.comparison(str(tmp_path), report) is None
    _write_verdicts(tmp_path, "baseline", "dev", [None, None, None])  # nothing scored for both
    assert report_lib.comparison(str(tmp_path), report) is None
    del report["eval"]["baseline"]
    assert report_lib.comparison(str(tmp_path), report) is None


def test_read_verdicts_round_trips_the_per_example_file(tmp_path):
    _write_verdicts(tmp_path, "student", "dev", [1, None, 0])
    verdicts = report_lib.read_verdicts(report_lib.verdicts_path(str(tmp_path), "student", "dev"))
    assert verdicts == [
        _verdict(i, "easy", x, x, None, db_id=f"db{i}") for i, x in enumerate([1, None, 0])
    ]
    assert report_lib.read_verdicts(str(tmp_path / "nothing.jsonl")) is None


def test_eval_stage_keeps_verdicts_and_reuses_them(tmp_path, monkeypatch):
    """W/<model>/eval/<split>.jsonl holds the scorer's verdicts; the cached summary is reused
    beside them and the split decoded again without them."""
    import types

    from kid import stages

    verdicts = [_verdict(0, "easy", 1, 1, None, db_id="a"), _verdict(1, "hard", 0, 0, None)]
    decoded = []

    class Decoder:
        def predict(self, variables, batches, encoded, tok):
            decoded.append(encoded)
            return ["SELECT 1", "SELECT 2"]

    class Scorer:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def score(self, golds, sql):
            assert golds == [("SELECT 1", "a"), ("SELECT 3", "db")] and len(sql) == 2
            return verdicts

    gold = [
        types.SimpleNamespace(query=q, db_id=d) for q, d in (("SELECT 1", "a"), ("SELECT 3", "db"))
    ]
    encoded = types.SimpleNamespace(examples=gold)
    monkeypatch.setattr(stages, "_eval_batches", lambda run, split, module: ([], encoded, None))
    monkeypatch.setattr(stages, "_decoder", lambda run, module, options: Decoder())
    monkeypatch.setattr(stages, "_scorer", lambda run, split: Scorer())
    run = stages.Run(None, str(tmp_path), {"models": {"student": {"steps": 7}}}, None)
    run.models["student"] = (types.SimpleNamespace(module=None), {})
    monkeypatch.setattr(stages.Run, "is_main", True)
    monkeypatch.setattr(stages.Run, "data", types.SimpleNamespace(tok=None))

    summary = stages._evaluate_model(run, "student", "dev")
    assert (summary["ex"], summary["n"], len(decoded)) == (0.5, 2, 1)
    path = report_lib.verdicts_path(str(tmp_path), "student", "dev")
    assert report_lib.read_verdicts(path) == verdicts
    assert stages._evaluate_model(run, "student", "dev") == summary and len(decoded) == 1
    os.remove(path)
    assert stages._evaluate_model(run, "student", "dev")["ex"] == 0.5 and len(decoded) == 2
    assert report_lib.read_verdicts(path) == verdicts
