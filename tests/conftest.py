"""Shared fixtures: the real Spider files beside the checkout (../shared/data/spider)."""

import os
import pathlib

# The tests compile many tiny programs and run each a few times: XLA's LLVM optimisation
# costs more than it saves there (about a third of the suite's time). Set before any test
# starts the jax backend; eight_devices.env() passes it on to the subprocess checks.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"

import pytest  # noqa: E402

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
