"""Reading the json lists every Spider-format file holds, with errors that name the place;
and writing a file atomically (a reader never sees half of it).

Every failure names the file (and the line where the reader knows it): a bad dataset
file must point at itself, not surface as a bare TypeError or RecursionError. Only
regular files are read: a FIFO or device at a data path would block or never end.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any


class DataError(ValueError):
    """A data file or record that cannot be read; the message names file, line or index."""


def read_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a regular file (a leading BOM dropped).

    Opened non-blocking and checked with fstat, so a FIFO is refused without waiting for a
    writer, even if it replaced a regular file after an earlier check.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path}: not a regular file")
    with open(fd, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: invalid UTF-8 at line {line} (byte {e.start})") from None


def _line_at_depth(text: str, depth: int) -> int:
    """The line where bracket nesting (outside strings) first reaches `depth`."""
    level, line, in_string, escaped = 0, 1, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        elif escaped:
            escaped = False
        elif in_string:
            escaped = ch == "\\"
            in_string = ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            if level >= depth:
                return line
        elif ch in "]}":
            level -= 1
    return line


def parse_json(text: str, path: str) -> Any:
    """json.loads with every parse failure as a DataError naming `path` (and the line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        # Python's reader recurses once per level: name where the nesting gets that deep.
        depth = sys.getrecursionlimit() // 2
        line = _line_at_depth(text, depth)
        raise DataError(
            f"{path}: JSON nested too deeply for the reader ({depth} levels at line {line})"
        ) from None
    except ValueError as e:  # e.g. an integer literal over Python's digit limit
        raise DataError(f"{path}: invalid JSON: {e}") from None


def read_json_list(path: str | os.PathLike[str], what: str) -> list[Any]:
    """Loads a json file that must hold a list (`what` names its items in the error)."""
    path = os.fspath(path)
    items = parse_json(read_text(path), path)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a list of {what}, got {type(items).__name__}")
    return items


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path`` and renames it into place."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")
