"""Tensor-by-tensor access to a directory of safetensors files (single or sharded).

Each read opens the file, copies one tensor out and closes it again, so the file's memory
map never accumulates resident pages: loading stays streaming however large the checkpoint.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"


class SafetensorsDir:
    """The tensors of ``directory/*.safetensors``, located through the index file if any."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        index = self.directory / INDEX_FILE
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.directory / file for name, file in weight_map.items()}
            for file in sorted(set(self.files.values())):
                if not file.exists():
                    raise FileNotFoundError(f"{index} names {file.name}, which does not exist")
        else:
            paths = sorted(self.directory.glob("*.safetensors"))
            if not paths:
                raise FileNotFoundError(
                    f"no *.safetensors files in {self.directory} (PyTorch .bin checkpoints "
                    "are not supported: convert them with transformers' save_pretrained)"
                )
            self.files = {}
            for path in paths:
                with safe_open(path, "np") as f:
                    self.files.update(dict.fromkeys(f.keys(), path))

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def names(self) -> set[str]:
        return set(self.files)

    def where(self, name: str) -> str:
        """Human-readable location of a tensor, for error messages."""
        return f"tensor {name!r} in {self.files.get(name, self.directory)}"

    def read(self, name: str) -> np.ndarray:
        with safe_open(self._file(name), "np") as f:
            return f.get_tensor(name)

    def _file(self, name: str) -> pathlib.Path:
        if name not in self.files:
            raise KeyError(f"tensor {name!r} missing from checkpoint {self.directory}")
        return self.files[name]
