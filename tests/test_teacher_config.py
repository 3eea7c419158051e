"""configs/teacher.py, the shipped teacher's recipe, on a tiny budget (its own module, so
xdist's loadfile can run it beside test_main.py's end-to-end job)."""

import json

import full_speed
import pytest


@pytest.mark.slow
def test_teacher_config_on_a_tiny_budget(tmp_path):
    """configs/teacher.py as the shipped teacher was trained, shrunk: it trains, evaluates on
    val_in_domain while training and on every split after, and exports with a manifest."""
    from configs import teacher as teacher_config
    from kid import export, teachers

    config = teacher_config.get_config("tiny")
    full_speed.run_main(config, tmp_path / "w")
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert set(report["eval"]["teacher"]) == {"dev", "dev_in_domain", "val_in_domain"}
    records = [json.loads(line) for line in open(tmp_path / "w" / "teacher" / "metrics.jsonl")]
    assert [r["step"] for r in records if "ex" in r] == [2, 4]
    out = export.export(str(tmp_path / "w"), str(tmp_path / "hf"), "teacher", manifest=True)
    manifest = teachers.read_manifest(str(out))
    assert manifest["steps"] == 4 and manifest["benchmark"]["sizes"]["train"] == 200
    assert manifest["eval"]["dev_in_domain"]["n"] == 20
