"""Shared fixtures: the real Spider files beside the checkout (../shared/data/spider)."""

import os
import pathlib

import pytest

from kid.data import schema as schema_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def spider_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KID_SPIDER_DIR", REPO.parent / "shared/data/spider"))


@pytest.fixture(scope="session")
def spider_dir() -> pathlib.Path:
    path = spider_path()
    if not (path / "dev.json").exists():
        pytest.skip(f"real Spider data not found at {path} (set KID_SPIDER_DIR)")
    return path


@pytest.fixture(scope="session")
def spider_tables(spider_dir) -> dict[str, schema_lib.Schema]:
    """Spider's tables.json, read once."""
    return schema_lib.load_tables(spider_dir / "tables.json")
