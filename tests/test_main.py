"""The main job (CONTRACT 5): stages, report, and configs refused at start."""

import json

import pytest

from configs import demo
from kid import job, main


def _benchmark_only(tmp_path):
    config = demo.get_config("runlocal")
    config.stages = ("benchmark",)
    return config


def test_benchmark_stage_generates_and_reports(tmp_path):
    report = main.run(_benchmark_only(tmp_path), str(tmp_path))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["stages"] == ["benchmark"] and set(on_disk["timings"]) == {"benchmark"}
    assert on_disk["benchmark"] == json.loads(json.dumps(report["benchmark"]))
    assert (tmp_path / "benchmark" / "tables.json").exists()
    assert "| benchmark |" in (tmp_path / "report.md").read_text()


def test_stages_given_as_a_comma_list(tmp_path):
    config = _benchmark_only(tmp_path)
    config.stages = ("benchmark,",)  # what --config.stages=benchmark, gives
    assert main.run(config, str(tmp_path))["stages"] == ["benchmark"]


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: setattr(c, "stages", ("benchmark", "nope")), r"config.stages: unknown stage"),
        (
            lambda c: setattr(c, "method", "distill_harder"),
            r"method 'distill_harder' is not one of",
        ),
        (lambda c: c.mesh.update({"data": 3}), r"mesh \{'data': 3"),
        (lambda c: c.mesh.update({"model": 1}), r"mesh: unknown axes \['model'\]"),
        (
            lambda c: setattr(c.teacher, "checkpoint", "/no/such/dir"),
            r"teacher.checkpoint '/no/such/dir'",
        ),
        (lambda c: setattr(c.student, "preset", "t5-huge"), r"student.preset 't5-huge'"),
        (
            lambda c: c.kd.update({"alpha": 2.0}) or setattr(c.kd, "alhpa", 0.1),
            r"kd: unknown option",
        ),
        (lambda c: setattr(c.student.train, "schedule", "exp"), r"student.train.schedule 'exp'"),
    ],
)
def test_bad_config_fails_at_start_naming_the_field(tmp_path, change, message):
    config = demo.get_config("runlocal")
    change(config)
    with pytest.raises(job.ConfigError, match=message):
        main.run(config, str(tmp_path))
    assert not (tmp_path / "benchmark").exists()  # refused before any work


def test_teacher_with_another_tokenizer_is_refused(tmp_path):
    from kid import models
    from kid.data import tokenizer as tokenizer_lib

    teacher = tmp_path / "teacher_hf"
    module = models.build(models.get_config("t5-synth-teacher"))
    models.save_hf(module, models.init(module, __import__("jax").random.key(0)), teacher)
    words = [f"word{i} other{i % 7} select from where" for i in range(300)]
    tokenizer_lib.train_bpe(words, teacher, vocab_size=300)
    config = demo.get_config("runlocal")
    config.stages = ("benchmark", "teacher")
    config.teacher.checkpoint = str(teacher)
    config.teacher.train.steps = 0
    with pytest.raises(job.ConfigError, match=r"teacher.checkpoint .*tokenizer differs"):
        main.run(config, str(tmp_path / "w"))
