"""Shipped teachers (CONTRACT 10): where they are found, their manifest, and the digest guard
that refuses a benchmark or tokenizer the teacher was not trained on."""

import hashlib
import json
import os
import subprocess
import sys

import full_speed
import pytest

from configs import demo
from kid import job, main, teachers
from kid.data import tokenizer as tokenizer_lib


def _manifest(benchmark_dir, tok_sha, *, seed=0, train=600, databases=(20, 4)):
    train_file = os.path.join(benchmark_dir, "train.json")
    return {
        "command": "python -m kid.main --config configs/teacher.py",
        "config": {},
        "steps": 1,
        "eval": {},
        "benchmark": {
            "seed": seed,
            "sizes": {"train": train},
            "databases": list(databases),
            "train_sha256": hashlib.sha256(open(train_file, "rb").read()).hexdigest(),
        },
        "tokenizer_sha256": tok_sha,
    }


@pytest.fixture(scope="module")
def runlocal_benchmark(tmp_path_factory):
    """The runlocal benchmark and a shipped-teacher directory whose manifest matches it (the
    weights are a random teacher: the guard, not the model, is under test)."""
    root = tmp_path_factory.mktemp("shipped")
    config = demo.get_config("runlocal")
    config.stages = ("benchmark",)
    config.benchmark.dir = str(root / "benchmark")
    main.run(config, str(root / "bench_run"))
    from kid import models

    teacher = root / "teacher"
    module = models.build(models.get_config("t5-synth-student"))
    models.save_hf(module, models.init(module, __import__("jax").random.key(0)), teacher)
    words = [f"word{i} other{i % 7} select from where" for i in range(300)]
    tok = tokenizer_lib.with_mask_token(
        tokenizer_lib.train_bpe(words, root / "tok", vocab_size=300), "<mask>"
    )
    tokenizer_lib.write_tokenizer_files(tok, teacher)
    manifest = _manifest(root / "benchmark", teachers.tokenizer_sha256(tok))
    (teacher / teachers.MANIFEST).write_text(json.dumps(manifest))
    return root, teacher


def _config(root, teacher, **benchmark):
    config = demo.get_config("runlocal")
    config.stages = ("benchmark", "teacher")
    config.benchmark.dir = str(root / "benchmark")
    config.benchmark.update(benchmark)
    config.teacher.checkpoint = str(teacher)
    config.teacher.train.steps = 0
    config.data.tokenizer = str(teacher)
    return config


@pytest.mark.parametrize(
    "change,field",
    [({"seed": 1}, "benchmark.seed is 1"), ({"train": 500}, "benchmark.train is 500"),
     ({"databases": (30, 4)}, r"benchmark.databases is \[30, 4\]")],
)  # fmt: skip
def test_another_benchmark_is_refused_at_start(runlocal_benchmark, tmp_path, change, field):
    root, teacher = runlocal_benchmark
    config = _config(root, teacher, **change)
    config.benchmark.dir = str(tmp_path / "other")
    with pytest.raises(job.ConfigError, match=field + ".*shipped teacher"):
        main.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "other").exists()  # before the benchmark is generated


def test_another_train_file_is_refused_naming_both_digests(runlocal_benchmark, tmp_path):
    root, teacher = runlocal_benchmark
    shipped = tmp_path / "teacher"  # the same teacher, its manifest naming another digest
    shipped.mkdir()
    for name in os.listdir(teacher):
        if name != teachers.MANIFEST:
            os.symlink(teacher / name, shipped / name)
    manifest = json.loads((teacher / teachers.MANIFEST).read_text())
    ours = manifest["benchmark"]["train_sha256"]
    manifest["benchmark"]["train_sha256"] = "0" * 64
    (shipped / teachers.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(job.ConfigError, match=f"train_sha256 .* is {ours} but .* {'0' * 64}"):
        main.run(_config(root, shipped), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "teacher").exists()  # nothing trained or loaded


def test_another_tokenizer_is_refused_with_exit_2(runlocal_benchmark, tmp_path):
    root, teacher = runlocal_benchmark
    args = [
        sys.executable, "-m", "kid.main", "--config=configs/demo.py:runlocal",
        f"--workdir={tmp_path / 'w'}", "--config.stages=benchmark,teacher",
        f"--config.benchmark.dir={root / 'benchmark'}", f"--config.teacher.checkpoint={teacher}",
        "--config.teacher.train.steps=0", "--config.data.tokenizer=bpe",
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, env=full_speed.env(), cwd=full_speed.REPO
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tokenizer_sha256" in done.stderr and "shipped teacher" in done.stderr


def test_the_matching_benchmark_and_tokenizer_load(runlocal_benchmark, tmp_path):
    root, teacher = runlocal_benchmark
    report = main.run(_config(root, teacher), str(tmp_path / "w"))
    assert report["models"]["teacher"]["steps"] == 0


def test_resolve_finds_a_shipped_teacher_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the relative path does not exist
    store = tmp_path / "store" / "mine"
    store.mkdir(parents=True)
    (store / teachers.MANIFEST).write_text("{}")
    assert teachers.resolve("data/teachers/mine") == "data/teachers/mine"  # nowhere yet
    monkeypatch.setenv(teachers.ENV, str(tmp_path / "store"))
    assert teachers.resolve("data/teachers/mine") == str(store)
    assert teachers.resolve("/an/absolute/path") == "/an/absolute/path"
    repo = teachers.search_path("t5-synth")[-2]  # the repository kid is imported from
    assert repo == full_speed.REPO / "data" / "teachers" / "t5-synth"


def test_manifest_of_a_finished_workdir(tmp_path):
    work = tmp_path / "w"
    (work / "benchmark").mkdir(parents=True)
    (work / "teacher").mkdir()
    (work / "benchmark" / "train.json").write_text('[{"db_id": "a"}]\n')
    config = {
        "benchmark": {"dir": "", "seed": 3, "train": 1, "dev": 2, "dev_in_domain": 2,
                      "val_in_domain": 2, "databases": [10, 4]},
        "data": {"dir": "", "train": "train.json"},
    }  # fmt: skip
    (work / "config.json").write_text(json.dumps(config))
    (work / "command.txt").write_text("python -m kid.main --config configs/teacher.py\n")
    (work / "teacher" / "done.json").write_text('{"steps": 8000}')
    scores = {"ex": 0.7, "em": 0.8, "ts": 0.69, "n": 300, "decode_s": 1.0}
    (work / "report.json").write_text(json.dumps({"eval": {"teacher": {"dev": scores}}}))
    (work / "teacher" / "eval").mkdir()
    verdicts = [{"idx": i, "exec": [1, 0, None][i % 3]} for i in range(150)]
    (work / "teacher" / "eval" / "dev_in_domain.jsonl").write_text(
        "".join(json.dumps(v) + "\n" for v in verdicts)
    )
    words = [f"word{i} select" for i in range(100)]
    tok = tokenizer_lib.train_bpe(words, tmp_path / "tok", vocab_size=280)
    manifest = teachers.build_manifest(str(work), "teacher", tok)
    assert manifest["command"] == "python -m kid.main --config configs/teacher.py"
    assert manifest["steps"] == 8000 and manifest["config"] == config
    assert manifest["eval"] == {"dev": {"ex": 0.7, "ts": 0.69, "em": 0.8, "n": 300}}
    assert manifest["benchmark"] == {
        "seed": 3,
        "sizes": {"train": 1, "dev": 2, "dev_in_domain": 2, "val_in_domain": 2},
        "databases": [10, 4],
        "train_sha256": hashlib.sha256(b'[{"db_id": "a"}]\n').hexdigest(),
    }
    # the first 100 examples: 34 right (i % 3 == 0), None counts wrong
    assert manifest["check"] == {"split": "dev_in_domain", "examples": 100, "right": 34, "ex": 0.34}
    canonical = json.dumps(json.loads(tok.hf.backend_tokenizer.to_str()), sort_keys=True)
    assert manifest["tokenizer_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
