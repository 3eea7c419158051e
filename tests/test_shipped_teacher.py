"""The shipped teacher stays true (CONTRACT 10): the generator still writes the training file
it was trained on, and decoding the first examples of dev_in_domain from its directory gives
the EX its manifest records, so a change in the model, tokenizer, prompt or decoding code
that breaks it fails here.

Margin: greedy decoding is deterministic on one machine; another CPU or XLA version may
flip a near-tie between two tokens, so up to 2 of the 100 examples may change verdict.
"""

import hashlib
import json
import os

import pytest

from kid import evaluate, predict, synth, teachers
from kid.data import tokenizer as tokenizer_lib

SHIPPED = teachers.resolve("data/teachers/t5-synth")
MARGIN = 2  # examples of the slice


@pytest.fixture(scope="module")
def manifest():
    return teachers.read_manifest(SHIPPED)


@pytest.fixture(scope="module")
def benchmark(manifest, tmp_path_factory):
    """The benchmark of the manifest's seed, sizes and databases (no test-suite copies: they
    are written after the splits and change none of them)."""
    shipped = manifest["benchmark"]
    out = tmp_path_factory.mktemp("shipped") / "benchmark"
    synth.generate(
        out,
        seed=shipped["seed"],
        sizes=synth.Sizes(**shipped["sizes"]),
        ts_copies=0,
        databases=tuple(shipped["databases"]),
    )
    return out


def test_directory_and_manifest(manifest):
    names = set(os.listdir(SHIPPED))
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            "kid_inference.json", "manifest.json"} <= names  # fmt: skip
    size = sum(os.path.getsize(os.path.join(SHIPPED, n)) for n in names)
    assert size <= 20 * 2**20
    assert set(manifest) >= {"command", "config", "steps", "eval", "benchmark", "tokenizer_sha256"}
    for split in ("dev_in_domain", "dev"):
        assert set(manifest["eval"][split]) == {"ex", "ts", "em", "n"}


def test_generator_reproduces_the_training_file(manifest, benchmark):
    digest = hashlib.sha256((benchmark / "train.json").read_bytes()).hexdigest()
    assert digest == manifest["benchmark"]["train_sha256"]


def test_tokenizer_digest(manifest):
    tok = tokenizer_lib.load_tokenizer(SHIPPED)
    assert teachers.tokenizer_sha256(tok) == manifest["tokenizer_sha256"]


def test_decoding_the_slice_gives_the_manifests_ex(manifest, benchmark, tmp_path):
    check = manifest["check"]
    records = json.loads((benchmark / f"{check['split']}.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    (data / "slice.json").write_text(json.dumps(records[: check["examples"]]))
    (data / "tables.json").symlink_to(benchmark / "tables.json")
    (data / "database").symlink_to(benchmark / "database")
    pred, gold = tmp_path / "pred.sql", tmp_path / "gold.sql"
    argv = ["--model", SHIPPED, "--data-dir", str(data), "--split", "slice", "--out", str(pred)]
    assert predict.main(argv) == 0
    gold.write_text("".join(f"{r['query']}\t{r['db_id']}\n" for r in records[: check["examples"]]))
    verdicts = tmp_path / "verdicts.jsonl"
    argv = ["--gold", str(gold), "--pred", str(pred), "--db-dir", str(benchmark / "database"),
            "--table", str(benchmark / "tables.json"), "--etype", "exec",
            "--per-example", str(verdicts)]  # fmt: skip
    assert evaluate.main(argv) == 0
    right = teachers.slice_ex(str(verdicts), check["examples"])["right"]
    assert abs(right - check["right"]) <= MARGIN, (right, check)
