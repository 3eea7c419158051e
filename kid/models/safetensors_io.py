"""Tensor-by-tensor access to a directory of safetensors files (single or sharded).

Each read opens the file, copies one tensor out and closes it again, so the file's memory
map never accumulates resident pages: loading stays streaming however large the checkpoint.

A checkpoint is user input: malformed files, index entries that leave the directory and
non-float tensors raise ``CheckpointError`` naming the file and the field or tensor.
"""

from __future__ import annotations

import json
import pathlib
import reprlib

import numpy as np
from safetensors import SafetensorError, safe_open

INDEX_FILE = "model.safetensors.index.json"
# Weights kid reads (cast to the loader's dtype); integer or bool tensors are never weights.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class CheckpointError(ValueError):
    """A checkpoint file kid cannot use; the message names the file and the field or tensor."""


def read_json_object(path: pathlib.Path) -> dict:
    """The JSON object in ``path``; invalid JSON or any other JSON value names the file."""
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # Also UnicodeDecodeError.
        raise CheckpointError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: must be a JSON object, got {type(value).__name__}")
    return value


def _open(path: pathlib.Path):
    """``safe_open`` whose header errors (truncated file, bad length, bad JSON) name the file."""
    try:
        return safe_open(path, "np")
    except SafetensorError as error:
        raise CheckpointError(f"{path}: invalid safetensors file ({error})") from None


def _allowed_roots(directory: pathlib.Path) -> tuple[pathlib.Path, ...]:
    """Where an index may point: inside the checkpoint directory, and for a Hugging Face hub
    cache snapshot (``models--*/snapshots/<revision>``) the ``blobs`` its files link to."""
    resolved = directory.resolve()
    repo = resolved.parent.parent
    if resolved.parent.name == "snapshots" and repo.name.startswith("models--"):
        return resolved, repo / "blobs"
    return (resolved,)


class SafetensorsDir:
    """The tensors of ``directory/*.safetensors``, located through the index file if any."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        self.index = self.directory / INDEX_FILE
        if self.index.exists():
            self.files = self._indexed_files()
        else:
            paths = sorted(self.directory.glob("*.safetensors"))
            if not paths:
                raise FileNotFoundError(
                    f"no *.safetensors files in {self.directory} (PyTorch .bin checkpoints "
                    "are not supported: convert them with transformers' save_pretrained)"
                )
            self.files = {}
            for path in paths:
                with _open(path) as f:
                    self.files.update(dict.fromkeys(f.keys(), path))

    def _indexed_files(self) -> dict[str, pathlib.Path]:
        weight_map = read_json_object(self.index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(
                f"{self.index}: weight_map must be an object of tensor name -> file name, "
                f"got {reprlib.repr(weight_map)}"
            )
        shards: dict[str, pathlib.Path] = {}
        for name, file in weight_map.items():
            if not isinstance(file, str):
                raise CheckpointError(
                    f"{self.index}: weight_map[{name!r}] must be a file name, "
                    f"got {reprlib.repr(file)}"
                )
            if file not in shards:
                shards[file] = self._shard(name, file)
        return {name: shards[file] for name, file in weight_map.items()}

    def _shard(self, name: str, file: str) -> pathlib.Path:
        """The path of index entry ``file``, refused unless it stays inside the checkpoint
        (a downloaded index must not make kid read arbitrary files)."""
        entry = f"{self.index}: weight_map[{name!r}] = {file!r}"
        relative = pathlib.PurePath(file)
        if relative.is_absolute() or ".." in relative.parts:
            raise CheckpointError(f"{entry} is not a relative path inside {self.directory}")
        path = self.directory / relative
        roots = _allowed_roots(self.directory)
        if not any(path.resolve().is_relative_to(root) for root in roots):
            raise CheckpointError(f"{entry} resolves to {path.resolve()}, outside {roots[0]}")
        if not path.is_file():
            raise FileNotFoundError(f"{entry}: no such regular file")
        return path

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def names(self) -> set[str]:
        return set(self.files)

    def where(self, name: str) -> str:
        """Human-readable location of a tensor, for error messages."""
        return f"tensor {name!r} in {self.files.get(name, self.directory)}"

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name``; a non-float one is refused rather than silently cast to float."""
        with _open(self._file(name)) as f:
            if name not in f.keys():
                raise CheckpointError(
                    f"{self.where(name)}: {self.index.name} maps it there, "
                    "but the file does not hold it"
                )
            dtype = f.get_slice(name).get_dtype()
            if dtype not in FLOAT_DTYPES:
                raise CheckpointError(
                    f"{self.where(name)} has dtype {dtype}: model weights must be floating "
                    f"point ({', '.join(FLOAT_DTYPES)})"
                )
            return f.get_tensor(name)

    def _file(self, name: str) -> pathlib.Path:
        if name not in self.files:
            raise KeyError(f"tensor {name!r} missing from checkpoint {self.directory}")
        return self.files[name]
