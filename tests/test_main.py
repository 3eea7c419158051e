"""The main job (CONTRACT 5): stages, report, and configs refused at start."""

import json

import full_speed
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
        (
            lambda c: setattr(c.benchmark, "databases", (100, 3)),
            r"benchmark.databases: 3 dev databases for 4 domains",
        ),
        (
            lambda c: setattr(c.benchmark, "databases", (100, "20")),
            r"benchmark.databases wants two integers \(train, dev\), got \(100, '20'\)",
        ),
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


@pytest.mark.slow
def test_runlocal_demo_end_to_end(tmp_path):
    """Every stage on a tiny benchmark: report keys and units of CONTRACT 5, dev EX while
    training at the step it belongs to, plot, TensorBoard events, predictions per split."""
    from kid import metrics_log

    config = demo.get_config("runlocal")
    config.data.min_group_batches = 1000  # one batch shape: one compile per model
    config.teacher.preset = "t5-synth-student"  # the pipeline, not the model, is under test
    config.teacher.train.eval_every = 10
    config.teacher.train.eval_examples = 10
    full_speed.run_main(config, tmp_path)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["method"] == "kid"
    assert set(on_disk["eval"]) == {"teacher", "student", "baseline"}
    for model, splits in on_disk["eval"].items():
        assert set(splits) == {"dev", "dev_in_domain"}
        for split, result in splits.items():
            assert 0.0 <= result["ex"] <= 1.0 and 0.0 <= result["em"] <= 1.0
            assert result["n"] == 60
            lines = (tmp_path / model / "eval" / f"{split}.sql").read_text().splitlines()
            assert len(lines) == 60
    for model in ("teacher", "student", "baseline"):
        info = on_disk["models"][model]
        assert info["params"] > 0 and info["train_s"] > 0 and info["steps"] > 0
        assert list((tmp_path / model / "tb").glob("events.out.tfevents.*"))
    records = metrics_log.read_metrics(tmp_path / "teacher" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(5, 31, 5))
    evaluated = [r["step"] for r in records if "ex" in r]
    assert evaluated == [10, 20, 30] and all("loss" in r for r in records)
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report.md").read_text().startswith("KID student ")
    comparison = on_disk["comparison"]
    assert comparison["split"] == "dev_in_domain" and comparison["n"] == 60
    counts = ("both", "student_only", "baseline_only", "neither")
    assert sum(comparison[k] for k in counts) == 60
    assert comparison["ci95"][0] <= comparison["diff"] <= comparison["ci95"][1]
    for model in ("student", "baseline"):
        verdicts = (tmp_path / model / "eval" / "dev_in_domain.jsonl").read_text().splitlines()
        assert len(verdicts) == 60
    assert on_disk["models"]["student"]["steps"] == config.student.train.steps


class _Tokenizer:
    pad_id, eos_id, mask_id = 0, 1, 3

    def __len__(self):
        return 4096


@pytest.mark.parametrize("rate,expected", [(0.1, True), (0.0, False)])
def test_training_runs_dropout_when_the_model_config_has_it(rate, expected):
    import types

    from kid import models, stages

    spec = job.ModelSpec(models.get_config("t5-synth-student", dropout_rate=rate), "params", "")
    run = types.SimpleNamespace(
        data=types.SimpleNamespace(tok=_Tokenizer()), config=demo.get_config("runlocal")
    )
    assert stages._kd_config(run, "sft", spec, None).dropout is expected
    teacher = (job.ModelSpec(models.get_config("t5-synth-teacher"), "params", ""), None)
    assert stages._kd_config(run, "kid", spec, teacher).dropout is expected


def test_models_train_on_the_first_train_examples():
    """data.train_examples: models fit the first N examples; the whole file stays in
    Data.train (the tokenizer and a shipped teacher's digest see it all)."""
    from kid.data import spider

    examples = tuple(
        spider.Example(db_id="a", question=f"q{i}", query="SELECT 1") for i in range(5)
    )
    dataset = spider.Dataset(examples, {}, None, ())
    config = demo.get_config("runlocal").data
    data = job.Data(config, None, dataset, {})
    assert data.fit is dataset
    config.train_examples = 3
    assert [e.question for e in data.fit.examples] == ["q0", "q1", "q2"]
    assert data.train is dataset
