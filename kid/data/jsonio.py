"""Reading the json lists every Spider-format file holds, with errors that name the place."""

from __future__ import annotations

import json
import os
from typing import Any


class DataError(ValueError):
    """A data file or record that cannot be read; the message names file, line or index."""


def read_json_list(path: str | os.PathLike[str], what: str) -> list[Any]:
    """Loads a json file that must hold a list (`what` names its items in the error)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a list of {what}")
    return items
