"""The gold / prediction / per-example files of `python -m kid.evaluate` (CONTRACT 3).

Reads are bounded per line, because PRED is model output nobody has read: a line over
`MAX_LINE_CHARS`, one that is not valid UTF-8, or a GOLD db_id that is not a plain name
is returned as a `LineError` in that line's place (one verdict, not the run), and a
leading BOM is dropped. Lines end at `\\n`, `\\r\\n` or `\\r`, as in Python's text mode
(and so in the official evaluators).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import TextIO

from kid.data import schema as schema_lib

MAX_LINE_CHARS = 100_000  # per GOLD / PRED line: Spider and BIRD queries are < 5,000
MAX_SKIP_CHARS = 1 << 28  # past a too-long line, how far to look for its end
_SKIP_CHUNK = 1 << 20

TOO_LONG, NOT_UTF8, INVALID_DB_ID = "too_long", "not_utf8", "invalid_db_id"


class SqlFileError(ValueError):
    """A gold or prediction file that does not follow the format; names file and line."""


@dataclasses.dataclass(frozen=True)
class LineError:
    """A line that could not be read, in its place among the lines that could."""

    line: int  # 1-based
    kind: str  # TOO_LONG, NOT_UTF8 or INVALID_DB_ID
    detail: str  # for people: what is wrong with the line
    db_id: str = ""  # the db_id as written, for INVALID_DB_ID
    ends_file: bool = False  # no newline within MAX_SKIP_CHARS: the rest is not read


def _skip_line(f: TextIO) -> bool:
    """Reads to the end of the current line; False if it has none within MAX_SKIP_CHARS."""
    skipped = 0
    while skipped < MAX_SKIP_CHARS:
        chunk = f.readline(_SKIP_CHUNK)
        if not chunk or chunk.endswith("\n"):
            return True
        skipped += len(chunk)
    return False


def _checked(number: int, text: str) -> str | LineError:
    """The line, or NOT_UTF8 where decoding left escaped bytes (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return LineError(number, NOT_UTF8, f"not valid UTF-8 at character {e.start + 1}")
    return text


def _lines(path: str, max_lines: int | None = None) -> Iterator[str | LineError]:
    """Each line without its end, or a LineError; at most `max_lines` lines."""
    with open(path, "rb") as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=None)
        number = 0
        while max_lines is None or number < max_lines:
            text = f.readline(MAX_LINE_CHARS + 1)
            if not text:
                return
            number += 1
            if text.endswith("\n") or len(text) <= MAX_LINE_CHARS:
                yield _checked(number, text.removesuffix("\n"))
                continue
            if _skip_line(f):
                yield LineError(number, TOO_LONG, f"longer than {MAX_LINE_CHARS} characters")
                continue
            yield LineError(
                number,
                TOO_LONG,
                f"no newline within {MAX_SKIP_CHARS} characters: the rest of the file is not read",
                ends_file=True,
            )
            return


def _gold(path: str, number: int, text: str) -> tuple[str, str] | LineError:
    line = text.strip()
    sql, tab, db_id = line.rpartition("\t")
    if not tab and "\t" in text:  # `SQL<TAB>` and nothing after: an empty db_id
        sql, tab, db_id = line, "\t", ""
    if not tab or not sql.strip():
        raise SqlFileError(f"{path}:{number}: expected 'SQL<TAB>db_id', got {text[:200]!r}")
    db_id = db_id.strip()
    if not schema_lib.is_plain_db_id(db_id):
        return LineError(number, INVALID_DB_ID, f"db_id {db_id!r} is not a plain name", db_id)
    return sql.strip(), db_id


def read_gold(path: str | os.PathLike[str]) -> list[tuple[str, str] | LineError]:
    """`SQL<TAB>db_id` per line -> [(SQL, db_id) or LineError]; the db_id follows the
    last tab. A line without a tab or without SQL is a format error (SqlFileError)."""
    path = os.fspath(path)
    return [
        line if isinstance(line, LineError) else _gold(path, number, line)
        for number, line in enumerate(_lines(path), 1)
    ]


def read_predictions(
    path: str | os.PathLike[str], max_lines: int | None = None
) -> list[str | LineError]:
    """One SQL per line (or LineError), at most `max_lines`; an empty line is an empty
    prediction.

    As in the official evaluators, each line is stripped and only the text before a tab
    is kept (prediction files often carry `SQL<TAB>db_id`).
    """
    return [
        line if isinstance(line, LineError) else line.strip().split("\t")[0].strip()
        for line in _lines(os.fspath(path), max_lines)
    ]


def read_pair(
    gold_path: str | os.PathLike[str], pred_path: str | os.PathLike[str]
) -> tuple[list[tuple[str, str] | LineError], list[str | LineError]]:
    """Gold and prediction files, checked to have one prediction per gold line.

    GOLD's line count bounds the read of PRED: one line more shows a mismatch.
    """
    golds = read_gold(gold_path)
    preds = read_predictions(pred_path, max_lines=len(golds) + 1)
    if len(preds) > len(golds):
        raise SqlFileError(
            f"{os.fspath(pred_path)} has more predictions than the {len(golds)} gold queries "
            f"of {os.fspath(gold_path)} (one line each)"
        )
    if len(preds) < len(golds):
        last = preds[-1] if preds else None
        ended = isinstance(last, LineError) and last.ends_file
        why = f"; line {last.line}: {last.detail}" if ended else ""
        raise SqlFileError(
            f"{os.fspath(pred_path)} has {len(preds)} predictions but "
            f"{os.fspath(gold_path)} has {len(golds)} gold queries (one line each){why}"
        )
    return golds, preds


def check_output(path: str | os.PathLike[str]) -> None:
    """Raises SqlFileError unless `path` can be written: checked before scoring, so a
    bad path costs no verdicts."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise SqlFileError(f"{path} is a folder")
    if not os.path.isdir(folder):
        raise SqlFileError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SqlFileError(f"folder {folder} is not writable")


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict]) -> None:
    """Writes one JSON object per line, atomically (a temp file renamed into place).

    The temp file is created mode 0666 less the umask, as `open(path, "w")` would.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
