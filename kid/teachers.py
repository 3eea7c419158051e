"""Shipped teachers (CONTRACT 10): a teacher trained once, kept as a Hugging Face directory
``data/teachers/<name>/`` with a ``manifest.json`` that says what it was trained on.

A teacher is only worth distilling on the data it was trained for: the manifest holds the
benchmark's seed, sizes and database counts, a digest of the teacher's own training file
and of its tokenizer. Every stage that uses a shipped teacher checks them, before any
training, and a mismatch is a ``job.ConfigError`` (exit 2) naming the field and both values.

Where a shipped teacher is found (``resolve``), for a path written ``data/teachers/<name>``:
  1. that path, from the working directory (a clone: the repository root);
  2. ``$KID_TEACHERS/<name>``;
  3. the repository the imported ``kid`` lives in (an editable install, a Colab clone run
     from any folder);
  4. ``<sys.prefix>/share/kid/teachers/<name>`` (a plain ``pip install``: setup.py installs
     data/teachers there).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

from kid.synth.build import Sizes

MANIFEST = "manifest.json"
PREFIX = "data/teachers/"
ENV = "KID_TEACHERS"


class DigestError(ValueError):
    """Data or a tokenizer the shipped teacher was not trained on; the message names the
    field and both values."""


def search_path(name: str) -> list[pathlib.Path]:
    """Where ``data/teachers/<name>`` is looked for, in order (module docstring)."""
    places = [pathlib.Path(PREFIX) / name]
    if os.environ.get(ENV):
        places.append(pathlib.Path(os.environ[ENV]) / name)
    places.append(pathlib.Path(__file__).resolve().parents[1] / PREFIX / name)
    places.append(pathlib.Path(sys.prefix) / "share" / "kid" / "teachers" / name)
    return places


def resolve(path: str) -> str:
    """``path`` itself when it exists or is not of the form ``data/teachers/<name>``, else
    the first place of ``search_path`` that holds the teacher."""
    if not path or os.path.exists(path) or not path.startswith(PREFIX):
        return path
    name = path[len(PREFIX) :].strip("/")
    for place in search_path(name):
        if (place / MANIFEST).is_file():
            return str(place)
    return path


def is_shipped(path: str) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, MANIFEST))


def read_manifest(path: str) -> dict[str, Any]:
    with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_sha256(tok) -> str:
    """A digest of what the tokenizer maps text to: its canonical tokenizer.json (model,
    merges, added tokens, normalizer), independent of file layout and whitespace."""
    canonical = json.dumps(json.loads(tok.hf.backend_tokenizer.to_str()), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def benchmark_entry(benchmark: Mapping[str, Any], train_file: str) -> dict[str, Any]:
    """The manifest's "benchmark": the config's benchmark section and the train digest."""
    return {
        "seed": int(benchmark["seed"]),
        "sizes": {k: int(benchmark[k]) for k in Sizes.names() if k in benchmark},
        "databases": [int(n) for n in benchmark["databases"]],
        "train_sha256": file_sha256(train_file),
    }


def check_benchmark_config(manifest: Mapping, benchmark: Mapping, where: str) -> None:
    """Refuses a benchmark section that cannot reproduce the teacher's training file: seed,
    train size and database counts must be the manifest's (dev sizes may differ)."""
    shipped = manifest["benchmark"]
    pairs = {
        "benchmark.seed": (int(benchmark["seed"]), shipped["seed"]),
        "benchmark.train": (int(benchmark["train"]), shipped["sizes"]["train"]),
        "benchmark.databases": (
            [int(n) for n in benchmark["databases"]],
            list(shipped["databases"]),
        ),
    }
    for field, (ours, theirs) in pairs.items():
        if ours != theirs:
            raise DigestError(
                f"{field} is {ours} but the shipped teacher {where} was trained on {theirs}: "
                f"the train.json generated would not be its train_sha256 "
                f"{shipped['train_sha256']} ({MANIFEST})"
            )


def check_files(manifest: Mapping, train_file: str, tok, where: str) -> None:
    """Refuses a training file or a tokenizer whose digest is not the manifest's."""
    train = file_sha256(train_file)
    if train != manifest["benchmark"]["train_sha256"]:
        raise DigestError(
            f"benchmark train_sha256 of {train_file} is {train} but the shipped teacher "
            f"{where} was trained on {manifest['benchmark']['train_sha256']}"
        )
    ours = tokenizer_sha256(tok)
    if ours != manifest["tokenizer_sha256"]:
        raise DigestError(
            f"data.tokenizer: tokenizer_sha256 {ours} but the shipped teacher {where} "
            f"uses {manifest['tokenizer_sha256']}"
        )


COMMAND_FILE = "command.txt"  # kid.main writes the command line that made a workdir
CHECK_SPLIT, CHECK_EXAMPLES = "dev_in_domain", 100  # the slice tests/test_shipped_teacher decodes


def slice_ex(verdicts_file: str, examples: int = CHECK_EXAMPLES) -> dict[str, Any]:
    """EX of the first ``examples`` lines of a per-example verdicts file (CONTRACT 3), the
    figure a test reproduces by decoding that slice again: unscored examples count wrong."""
    with open(verdicts_file, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:examples]
    right = sum(1 for r in rows if r.get("exec") == 1)
    return {"split": os.path.basename(verdicts_file)[: -len(".jsonl")], "examples": len(rows),
            "right": right, "ex": right / max(len(rows), 1)}  # fmt: skip


def build_manifest(workdir: str, model_name: str, tok) -> dict[str, Any]:
    """The manifest of model ``model_name`` of a finished kid.main workdir: its command and
    config, steps, EX / TS / EM per evaluated split, the benchmark and tokenizer digests,
    and "check": its EX on the first examples of dev_in_domain (``slice_ex``)."""

    def read(*parts: str) -> Any:
        with open(os.path.join(workdir, *parts), encoding="utf-8") as f:
            return json.load(f) if parts[-1].endswith(".json") else f.read().strip()

    config = read("config.json")
    report = read("report.json")
    if model_name not in report.get("eval", {}):
        raise ValueError(f"{workdir}/report.json: no evaluation of {model_name!r}")
    benchmark = config["benchmark"]
    data_dir = (
        config["data"].get("dir") or benchmark.get("dir") or os.path.join(workdir, "benchmark")
    )
    command = os.path.join(workdir, COMMAND_FILE)
    return {
        "command": read(COMMAND_FILE) if os.path.isfile(command) else "",
        "config": config,
        "steps": int(read(model_name, "done.json")["steps"]),
        "eval": {
            split: {k: scores.get(k) for k in ("ex", "ts", "em", "n")}
            for split, scores in report["eval"][model_name].items()
        },
        "benchmark": benchmark_entry(benchmark, os.path.join(data_dir, config["data"]["train"])),
        "tokenizer_sha256": tokenizer_sha256(tok),
        "check": slice_ex(os.path.join(workdir, model_name, "eval", f"{CHECK_SPLIT}.jsonl")),
    }
