"""kid.predict and kid.export (CONTRACT 9) on small models trained on the embedded benchmark:
batch prediction reproduces the report's evaluation, an exported model gives the same greedy
SQL in transformers (PyTorch) as in kid, and bad input fails clearly."""

import json
import pathlib
import shutil

import filelock
import full_speed
import numpy as np
import pytest

from configs import demo, demo_decoder
from kid import export, predict, predictor
from kid.data import pipeline, spider
from kid.sql import scoring

pytestmark = pytest.mark.slow


def _train(config, workdir: pathlib.Path, steps: int) -> pathlib.Path:
    """A small model trained as the teacher stage (SFT), evaluated on dev."""
    config.stages = ("benchmark", "teacher", "eval")
    config.benchmark.train, config.benchmark.dev, config.benchmark.dev_in_domain = 400, 24, 8
    config.benchmark.databases = (10, 4)
    config.eval.splits = ("dev.json",)
    config.data.min_group_batches = 1000  # one batch shape: one compile
    config.data.eval_batch_size = 8
    config.teacher.train.update(
        steps=steps, learning_rate=3e-3, warmup_steps=10, eval_every=0, save_every=steps
    )
    full_speed.run_main(config, workdir)
    return workdir


def _once(tmp_path_factory, name: str, config, steps: int) -> pathlib.Path:
    """A workdir trained once per test session, by whichever xdist worker asks first (the
    others wait on the lock, then reuse it)."""
    path = tmp_path_factory.getbasetemp().parent / name
    with filelock.FileLock(f"{path}.lock"):
        if not (path / "report.json").exists():
            shutil.rmtree(path, ignore_errors=True)  # a build that failed halfway
            _train(config, path, steps)
    return path


@pytest.fixture(scope="session")
def t5_workdir(tmp_path_factory):
    config = demo.get_config("runlocal")
    config.teacher.preset = "t5-synth-student"
    config.eval.method, config.eval.num_beams = "beam", 2  # the report's decoding is kept
    return _once(tmp_path_factory, "predict_t5", config, steps=120)


@pytest.fixture(scope="session")
def decoder_workdir(tmp_path_factory):
    config = demo_decoder.get_config("runlocal")
    config.teacher.preset = "llama-synth-student"
    config.data.batch_size = 8
    config.data.prompt_buckets, config.data.target_buckets = (320,), (64,)
    return _once(tmp_path_factory, "predict_decoder", config, steps=60)


def _predict(*argv) -> int:
    return predict.main([str(a) for a in argv])


def _teacher(workdir: pathlib.Path, *argv) -> int:
    """kid.predict with the workdir's teacher (the model these fixtures train)."""
    return _predict("--model", workdir, "--model-name", "teacher", *argv)


def test_batch_prediction_reproduces_the_reported_evaluation(t5_workdir, tmp_path):
    out = tmp_path / "pred.sql"
    bench = t5_workdir / "benchmark"
    rc = _teacher(t5_workdir, "--data-dir", bench, "--split", "dev", "--out", out)
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines == (t5_workdir / "teacher" / "eval" / "dev.sql").read_text().splitlines()
    assert len(set(lines)) > 1  # a model that learned something, not one repeated string
    dataset = spider.load_dataset(bench / "dev.json")
    with scoring.Scorer(bench / "database", schemas=dataset.schemas, workers=1) as scorer:
        verdicts = scorer.score([(e.query, e.db_id) for e in dataset.examples], lines)
    report = json.loads((t5_workdir / "report.json").read_text())
    assert np.mean([v.exec for v in verdicts]) == report["eval"]["teacher"]["dev"]["ex"]


def test_beams_and_execution_guided_selection_over_a_split(t5_workdir, tmp_path):
    out = tmp_path / "pred.sql"
    split = ("--data-dir", t5_workdir / "benchmark", "--split", "dev", "--out", out)
    assert _teacher(t5_workdir, *split, "--num-beams", "3", "--select", "executable") == 0
    assert len(out.read_text().splitlines()) == 24
    assert _teacher(t5_workdir, *split, "--num-samples", "3") == 0  # majority by default
    assert len(out.read_text().splitlines()) == 24


def test_a_skipped_record_keeps_the_lines_aligned(t5_workdir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(t5_workdir / "benchmark", data, ignore=shutil.ignore_patterns("database_ts"))
    records = json.loads((data / "dev.json").read_text())[:3]
    records.insert(1, {"db_id": records[0]["db_id"]})  # no question: skipped, reported
    (data / "dev.json").write_text(json.dumps(records))
    out = tmp_path / "pred.sql"
    rc = _teacher(t5_workdir, "--data-dir", data, "--split", "dev", "--out", out)
    lines = out.read_text().split("\n")[:-1]
    assert rc == 0 and len(lines) == 4 and lines[1] == "" and all(lines[i] for i in (0, 2, 3))


def test_one_question_with_its_result_rows(t5_workdir, tmp_path, capsys):
    example = json.loads((t5_workdir / "benchmark" / "dev.json").read_text())[0]
    db = t5_workdir / "benchmark" / "database" / example["db_id"] / f"{example['db_id']}.sqlite"
    # Any folder, not only the Spider layout; the file's stem is the db_id the prompt names.
    elsewhere = tmp_path / "copies" / db.name
    elsewhere.parent.mkdir()
    shutil.copy(db, elsewhere)
    expected = (t5_workdir / "teacher" / "eval" / "dev.sql").read_text().splitlines()[0]
    for path in (db, elsewhere):
        capsys.readouterr()
        rc = _teacher(t5_workdir, "--db", path, example["question"], "--execute")
        out = capsys.readouterr().out.splitlines()
        assert rc == 0 and out[0] == expected and len(out) >= 2  # the SQL, then rows or error


def _hf_greedy(hf_dir: pathlib.Path, prompts: list[np.ndarray], encoder_decoder: bool) -> list[str]:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    auto = (
        transformers.AutoModelForSeq2SeqLM if encoder_decoder else transformers.AutoModelForCausalLM
    )
    model = auto.from_pretrained(hf_dir).eval()
    out = []
    for ids in prompts:
        ids = torch.tensor(ids[None].astype(np.int64))
        with torch.no_grad():
            tokens = model.generate(
                ids, attention_mask=torch.ones_like(ids), num_beams=1, do_sample=False
            )[0]
        tokens = tokens if encoder_decoder else tokens[ids.shape[1] :]
        out.append(" ".join(tokenizer.decode(tokens, skip_special_tokens=True).split()))
    return out


@pytest.mark.parametrize("family", ["t5", "decoder"])
def test_export_round_trip_through_transformers(family, t5_workdir, decoder_workdir, tmp_path):
    workdir = t5_workdir if family == "t5" else decoder_workdir
    hf_dir = tmp_path / "hf"
    assert (
        export.main(["--workdir", str(workdir), "--out", str(hf_dir), "--model-name", "teacher"])
        == 0
    )
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        predictor.SETTINGS_FILE,
    } <= {p.name for p in hf_dir.iterdir()}
    settings = json.loads((hf_dir / predictor.SETTINGS_FILE).read_text())
    run = json.loads((workdir / "config.json").read_text())
    assert settings["data"]["prompt_style"] == run["data"]["prompt_style"]
    assert settings["decoding"]["max_new_tokens"] == max(run["data"]["target_buckets"])

    # kid on the exported directory: the workdir's evaluated SQL, greedy or beams as evaluated.
    out = tmp_path / "pred.sql"
    bench = workdir / "benchmark"
    assert _predict("--model", hf_dir, "--data-dir", bench, "--split", "dev", "--out", out) == 0
    evaluated = (workdir / "teacher" / "eval" / "dev.sql").read_text().splitlines()
    assert out.read_text().splitlines() == evaluated

    # transformers (PyTorch) greedy on the same prompts gives kid's greedy SQL.
    model = predictor.load(str(hf_dir))
    dataset = spider.load_dataset(bench / "dev.json")
    config = model.settings.data_config(str(bench))
    batches, encoded = pipeline.build(
        config, dataset, model.tok, train=False, decoder_start_id=model.decoder_start_id
    )
    n = 8
    decoder = model.decoder(predictor.default_mesh(), method="greedy")
    kid_sql = decoder.predict(model.variables, iter(batches), encoded, model.tok, limit=n)
    torch_sql = _hf_greedy(hf_dir, list(encoded.prompts[:n]), family == "t5")
    assert torch_sql == kid_sql
    assert len(set(kid_sql)) > 1


def test_bad_input_fails_with_a_clear_message(t5_workdir, tmp_path, capsys):
    teacher = ("--model", t5_workdir, "--model-name", "teacher")
    example = json.loads((t5_workdir / "benchmark" / "dev.json").read_text())[0]
    db = t5_workdir / "benchmark" / "database" / example["db_id"] / f"{example['db_id']}.sqlite"
    bench, out = t5_workdir / "benchmark", tmp_path / "p.sql"
    cases = [
        ((*teacher, "--db", tmp_path / "missing.sqlite", "How many?"), "database file not found"),
        ((*teacher, "--db", db, "why " * 400), "exceeds the prompt budget"),
        (("--model", t5_workdir, "--db", db, "How many?"), "'student' was not trained"),
        (("--model", tmp_path / "nowhere", "--db", db, "How many?"), "not a directory"),
        (
            (*teacher, "--data-dir", bench, "--split", "test", "--out", out),
            "test.json does not exist",
        ),
    ]
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    cases.append((("--model", bert, "--db", db, "How many?"), "bert"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(t5_workdir / "tokenizer", unfinished / "tokenizer")
    (unfinished / "student").mkdir()
    cases.append((("--model", unfinished, "--db", db, "How many?"), "has not finished training"))
    for argv, message in cases:
        capsys.readouterr()
        assert _predict(*argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert export.main(["--workdir", str(unfinished), "--out", str(tmp_path / "x")]) == 2
    assert "has not finished training" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
