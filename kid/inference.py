"""Decode a Spider-format split with a kid model and score the SQL: the evaluation that the
training loop (dev EX while training), the main job's eval stage and ``kid.predict`` share.

    decoder = SplitDecoder(module, mesh, options)
    sql = decoder.predict(variables, batches, split, tok)   # one SQL per example, in order
    future = scorer.submit(golds(split), sql)               # kid.sql.scoring.Scorer

Decoding is jitted once per prompt bucket (the eval batches' shapes) and logged, so a split
compiles a handful of times; rows are gathered from every host, so multi-host runs return
the whole split on each process. ``candidates`` returns every beam (``method="beam"``) or
sample (``method="sample"``, ``num_samples`` per example) for execution-guided selection
(``kid.selection``); ``predict`` keeps the first.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from kid import decoding, sharding, train
from kid.data import batching, encoding, spider
from kid.data import schema as schema_lib
from kid.data import tokenizer as tokenizer_lib
from kid.sql import scoring


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How SQL is decoded: greedy, beam search with ``num_beams`` beams (all kept as
    candidates, best first), or ``num_samples`` samples at ``temperature`` (seeded)."""

    max_new_tokens: int
    eos_id: int | tuple[int, ...]
    pad_id: int
    vocab_size: int | None = None
    method: str = "greedy"  # "greedy" | "beam" | "sample"
    num_beams: int = 4
    num_samples: int = 1
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"decoding method must be one of {METHODS}, got {self.method!r}")
        if self.num_beams < 1 or self.num_samples < 1:
            raise ValueError(
                f"num_beams ({self.num_beams}) and num_samples ({self.num_samples}) must be >= 1"
            )
        if self.method == "sample" and not self.temperature > 0:
            raise ValueError(f"sampling temperature must be > 0, got {self.temperature}")

    @property
    def num_candidates(self) -> int:
        return {"greedy": 1, "beam": self.num_beams, "sample": self.num_samples}[self.method]


METHODS = ("greedy", "beam", "sample")


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

    def _generate(self, variables, ids, mask, rng):
        """Candidates [B, C, max_new_tokens] of prompts [B, P]."""
        o = self.options
        generate = functools.partial(
            decoding.generate,
            self.module,
            variables,
            max_new_tokens=o.max_new_tokens,
            method=o.method,
            eos_id=o.eos_id,
            pad_id=o.pad_id,
            vocab_size=o.vocab_size,
        )
        if o.method == "beam":
            return generate(ids, mask, num_beams=o.num_beams).beams
        if o.method == "greedy":
            return generate(ids, mask).tokens[:, None]
        rows = ids.shape[0]
        out = generate(
            jnp.repeat(ids, o.num_samples, axis=0),
            jnp.repeat(mask, o.num_samples, axis=0),
            rng=rng,
            temperature=o.temperature,
        )
        return out.tokens.reshape(rows, o.num_samples, -1)

    def tokens(
        self, variables: Any, ids: jax.Array, mask: jax.Array, rng: jax.Array | None = None
    ) -> jax.Array:
        """Decoded candidates [B, C, max_new_tokens] of global prompt arrays [B, P]
        (C: ``options.num_candidates``; ``rng`` for sampling, default from the seed)."""
        rng = jax.random.key(self.options.seed) if rng is None else rng
        key = (ids.shape, jax.tree.structure(variables))
        if key not in self._compiled:
            start = time.perf_counter()
            with sharding.use_mesh(self.mesh, self.rules):
                self._compiled[key] = (
                    jax.jit(self._generate).lower(variables, ids, mask, rng).compile()
                )
            logging.info(
                "decoding: compiled for prompts %s in %.1f s",
                ids.shape,
                time.perf_counter() - start,
            )
        return self._compiled[key](variables, ids, mask, rng)

    def predict(
        self,
        variables: Any,
        batches: Iterable[Mapping[str, np.ndarray]],
        split: encoding.EncodedSplit,
        tok: tokenizer_lib.Tokenizer,
        *,
        limit: int | None = None,
    ) -> list[str]:
        """SQL for the first ``limit`` (default all) examples of ``split``, in split order, from
        its eval batches (this host's rows, ``kid.data.pipeline.eval_batches``); the first
        candidate of each (greedy, or the best beam)."""
        return [c[0] for c in self.candidates(variables, batches, split, tok, limit=limit)]

    def candidates(
        self,
        variables: Any,
        batches: Iterable[Mapping[str, np.ndarray]],
        split: encoding.EncodedSplit,
        tok: tokenizer_lib.Tokenizer,
        *,
        limit: int | None = None,
        progress: bool = False,
    ) -> list[list[str]]:
        """Every candidate SQL (``options.num_candidates``, best beam first) of the first
        ``limit`` examples of ``split``, in split order; ``progress`` shows a bar with the
        generated tokens per second."""
        n = len(split) if limit is None else min(limit, len(split))
        decoded: dict[int, np.ndarray] = {}
        bar = tqdm.tqdm(total=n, desc="decoding", unit="ex", disable=not progress)
        generated, start = 0, time.perf_counter()
        for b, local in enumerate(batches):
            if len(decoded) >= n:
                break
            ids, mask = batching.prompt_arrays(local)
            arrays = train.global_batch(
                {"ids": ids, "mask": mask, "index": local["example_index"]}, self.mesh, self.rules
            )
            rng = jax.random.fold_in(jax.random.key(self.options.seed), b)
            tokens = self.tokens(variables, arrays["ids"], arrays["mask"], rng)
            tokens, index = (
                np.asarray(multihost_utils.process_allgather(x, tiled=True))
                for x in (tokens, arrays["index"])
            )
            new = {int(i): rows for i, rows in zip(index, tokens, strict=True) if 0 <= i < n}
            generated += sum(_generated_tokens(rows, self.options.eos_id) for rows in new.values())
            bar.update(len(set(new) - set(decoded)))
            bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - start):.0f}")
            decoded.update(new)
        bar.close()
        return [[prediction_text(tok, row) for row in decoded[i]] for i in range(n)]


def _generated_tokens(rows: np.ndarray, eos_id: int | tuple[int, ...]) -> int:
    """Tokens up to and including EOS (the whole row when it has none) of [C, T] rows."""
    is_eos = np.isin(rows, np.atleast_1d(np.asarray(eos_id)))
    ended = is_eos.any(axis=1)
    return int(np.where(ended, is_eos.argmax(axis=1) + 1, rows.shape[1]).sum())


def prediction_text(tok: tokenizer_lib.Tokenizer, tokens: Sequence[int]) -> str:
    """One prediction line: decoded up to EOS, newlines flattened (the official format)."""
    return " ".join(tok.decode(tokens).split())


def golds(split: encoding.EncodedSplit, limit: int | None = None) -> list[tuple[str, str]]:
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
