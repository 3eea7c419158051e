import json

import pytest

from configs import demo
from kid import main


def test_demo_generates_benchmark_and_reports(tmp_path):
    config = demo.get_config("runlocal")
    report = main.run(config, str(tmp_path))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["stages"] == ["benchmark"] and set(on_disk["timings"]) == {"benchmark"}
    assert on_disk["benchmark"] == json.loads(json.dumps(report["benchmark"]))
    assert (tmp_path / "benchmark" / "tables.json").exists()
    assert "| benchmark |" in (tmp_path / "report.md").read_text()


def test_unknown_stage_is_an_error(tmp_path):
    config = demo.get_config("runlocal")
    config.stages = ("benchmark", "nope")
    with pytest.raises(ValueError, match=r"config.stages: unknown stage\(s\) \['nope'\]"):
        main.run(config, str(tmp_path))
