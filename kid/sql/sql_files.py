"""The gold / prediction / per-example files of `python -m kid.evaluate` (CONTRACT 3)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable


class SqlFileError(ValueError):
    """A gold or prediction file that does not follow the format; names file and line."""


def read_gold(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """`SQL<TAB>db_id` per line -> [(SQL, db_id)]; the db_id follows the last tab."""
    path = os.fspath(path)
    golds = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            sql, tab, db_id = line.strip().rpartition("\t")
            if not tab or not sql.strip() or not db_id.strip():
                raise SqlFileError(f"{path}:{number}: expected 'SQL<TAB>db_id', got {line!r}")
            golds.append((sql.strip(), db_id.strip()))
    return golds


def read_predictions(path: str | os.PathLike[str]) -> list[str]:
    """One SQL per line; an empty line is an empty prediction.

    As in the official evaluators, each line is stripped and only the text before a tab
    is kept (prediction files often carry `SQL<TAB>db_id`).
    """
    with open(os.fspath(path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start one
    return [line.strip().split("\t")[0].strip() for line in lines]


def read_pair(
    gold_path: str | os.PathLike[str], pred_path: str | os.PathLike[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Gold and prediction files, checked to have one prediction per gold line."""
    golds, preds = read_gold(gold_path), read_predictions(pred_path)
    if len(golds) != len(preds):
        raise SqlFileError(
            f"{os.fspath(pred_path)} has {len(preds)} predictions but "
            f"{os.fspath(gold_path)} has {len(golds)} gold queries (one line each)"
        )
    return golds, preds


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict]) -> None:
    """Writes one JSON object per line, atomically (a temp file renamed into place)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
