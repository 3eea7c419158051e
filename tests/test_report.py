import json

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
