"""Decode a Spider-format split with a kid model and score the SQL: the evaluation that the
training loop (dev EX while training), the main job's eval stage and ``kid.predict`` share.

    decoder = SplitDecoder(module, mesh, options)
    sql = decoder.predict(variables, batches, split, tok)   # one SQL per example, in order
    future = scorer.submit(golds(split), sql)               # kid.sql.scoring.Scorer

Decoding is jitted once per prompt bucket (the eval batches' shapes) and logged, so a split
compiles a handful of times; rows are gathered from every host, so multi-host runs return
the whole split on each process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from kid import decoding, sharding, train
from kid.data import batching, pipeline, spider
from kid.data import schema as schema_lib
from kid.data import tokenizer as tokenizer_lib
from kid.sql import scoring


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How SQL is decoded: greedy, or beam search with ``num_beams`` beams."""

    max_new_tokens: int
    eos_id: int | tuple[int, ...]
    pad_id: int
    vocab_size: int | None = None
    method: str = "greedy"  # "greedy" | "beam"
    num_beams: int = 4

    def __post_init__(self):
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")


class SplitDecoder:
    """``kid.decoding.generate`` jitted over a mesh, compiled once per prompt shape."""

    def __init__(
        self,
        module: Any,
        mesh: Mesh,
        options: DecodeOptions,
        *,
        rules: sharding.Rules = sharding.DEFAULT_RULES,
    ):
        self.module, self.mesh, self.options, self.rules = module, mesh, options, rules
        self._compiled: dict[tuple, Any] = {}

    @property
    def compiles(self) -> int:
        return len(self._compiled)

    def _generate(self, variables, ids, mask):
        o = self.options
        out = decoding.generate(
            self.module,
            variables,
            ids,
            mask,
            max_new_tokens=o.max_new_tokens,
            method=o.method,
            num_beams=o.num_beams,
            eos_id=o.eos_id,
            pad_id=o.pad_id,
            vocab_size=o.vocab_size,
        )
        return out.tokens

    def tokens(self, variables: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """Decoded tokens [B, max_new_tokens] of global prompt arrays [B, P]."""
        key = (ids.shape, jax.tree.structure(variables))
        if key not in self._compiled:
            start = time.perf_counter()
            with sharding.use_mesh(self.mesh, self.rules):
                self._compiled[key] = jax.jit(self._generate).lower(variables, ids, mask).compile()
            logging.info(
                "decoding: compiled for prompts %s in %.1f s",
                ids.shape,
                time.perf_counter() - start,
            )
        return self._compiled[key](variables, ids, mask)

    def predict(
        self,
        variables: Any,
        batches: Iterable[Mapping[str, np.ndarray]],
        split: pipeline.EncodedSplit,
        tok: tokenizer_lib.Tokenizer,
        *,
        limit: int | None = None,
    ) -> list[str]:
        """SQL for the first ``limit`` (default all) examples of ``split``, in split order, from
        its eval batches (this host's rows, ``kid.data.pipeline.eval_batches``)."""
        n = len(split) if limit is None else min(limit, len(split))
        decoded: dict[int, np.ndarray] = {}
        for local in batches:
            if len(decoded) >= n:
                break
            ids, mask = batching.prompt_arrays(local)
            arrays = train.global_batch(
                {"ids": ids, "mask": mask, "index": local["example_index"]}, self.mesh, self.rules
            )
            tokens = self.tokens(variables, arrays["ids"], arrays["mask"])
            tokens, index = (
                np.asarray(multihost_utils.process_allgather(x, tiled=True))
                for x in (tokens, arrays["index"])
            )
            decoded.update((int(i), row) for i, row in zip(index, tokens, strict=True) if i >= 0)
        return [prediction_text(tok, decoded[i]) for i in range(n)]


def prediction_text(tok: tokenizer_lib.Tokenizer, tokens: Sequence[int]) -> str:
    """One prediction line: decoded up to EOS, newlines flattened (the official format)."""
    return " ".join(tok.decode(tokens).split())


def golds(split: pipeline.EncodedSplit, limit: int | None = None) -> list[tuple[str, str]]:
    """(gold SQL, db_id) per example, as ``Scorer.score`` takes them."""
    return [(e.query, e.db_id) for e in split.examples[:limit]]


def merged_schemas(datasets: Iterable[spider.Dataset]) -> dict[str, schema_lib.Schema]:
    """The schemas of several splits in one dict (a Scorer scores any of them)."""
    schemas: dict[str, schema_lib.Schema] = {}
    for dataset in datasets:
        schemas.update(dataset.schemas)
    return schemas


def make_scorer(
    dataset: spider.Dataset,
    schemas: Mapping[str, schema_lib.Schema],
    *,
    ts_dir: str | None,
    workers: int,
    timeout: float,
) -> scoring.Scorer:
    """A Scorer of ``dataset``'s databases (test-suite copies from ``ts_dir`` if given)."""
    return scoring.Scorer(
        dataset.db_dir, schemas=schemas, ts_dir=ts_dir or None, workers=workers, timeout=timeout
    )
