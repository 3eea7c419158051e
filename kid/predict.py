"""Predict SQL with a trained model (CONTRACT 9): one question against a database, or a whole
Spider-format split in the official prediction format.

  python -m kid.predict --model W [--model-name student] --db PATH.sqlite "question" [--execute]
  python -m kid.predict --model (W|HF_DIR) --data-dir DIR --split dev --out pred.sql \\
      [--num-beams K | --num-samples N [--temperature T]] [--select first|executable|majority]

``--model`` is a kid workdir (the checkpoint and settings its report evaluated) or a local
Hugging Face directory (``kid.export`` writes one with kid's settings). Prompts are the
model's training prompts (schema, sample and matched values, prompt style and budget).
By default decoding is what the report's eval used (greedy, or its beams); with several
beams or samples, ``--select`` keeps the first candidate, the first that executes, or the
majority by execution result (self-consistency). Then score a split with ``kid.evaluate``.

Exit status 0 on success, 2 for input that cannot be used (the message names it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence

from kid import predictor, selection
from kid.data import jsonio, pipeline, prompts, spider
from kid.data import schema as schema_lib
from kid.sql import executor as executor_lib

_ROW_CAP = 100_000  # rows a printed result may have (more: "result_too_large")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kid.predict", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="a kid workdir or a local HF directory")
    parser.add_argument("--model-name", default="student", choices=predictor.MODEL_NAMES)
    one = parser.add_argument_group("one question")
    one.add_argument("question", nargs="?", help="the question (with --db)")
    one.add_argument("--db", help="the SQLite database the question is about")
    one.add_argument("--evidence", default="", help="BIRD-style external knowledge")
    one.add_argument("--execute", action="store_true", help="also print the result rows")
    one.add_argument("--max-rows", type=int, default=20, help="rows printed with --execute")
    split = parser.add_argument_group("a split")
    split.add_argument("--data-dir", help="Spider-format folder (tables.json, database/)")
    split.add_argument("--split", default="dev", help="DIR/<split>.json (default dev)")
    split.add_argument("--out", help="prediction file: one SQL per example, in order")
    decode = parser.add_argument_group("decoding")
    decode.add_argument("--num-beams", type=int, default=0, help="beam search with K beams")
    decode.add_argument("--num-samples", type=int, default=0, help="N samples per question")
    decode.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    decode.add_argument("--seed", type=int, default=0, help="sampling seed")
    decode.add_argument(
        "--select",
        default="",
        choices=("", *selection.RULES),
        help="which candidate to keep (default: majority when sampling, else first)",
    )
    decode.add_argument("--batch-size", type=int, default=0, help="default: the run's eval batch")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--timeout", type=float, default=30.0, help="seconds per query")
    execution.add_argument("--workers", type=int, default=2, help="executor processes")
    args = parser.parse_args(argv)
    if (args.db is None) == (args.data_dir is None):
        parser.error("give --db with a question, or --data-dir with --split and --out")
    if args.db is not None and not args.question:
        parser.error("--db needs a question")
    if args.data_dir is not None and (not args.out or args.question):
        parser.error("--data-dir needs --out (and no question)")
    if args.num_beams and args.num_samples:
        parser.error("--num-beams and --num-samples exclude each other")
    if args.num_beams < 0 or args.num_samples < 0 or args.max_rows < 0 or args.batch_size < 0:
        parser.error("--num-beams, --num-samples, --max-rows and --batch-size must be >= 0")
    if args.num_samples and not 0 < args.temperature < math.inf:
        parser.error("--temperature must be finite and > 0")
    if not 0 < args.timeout < math.inf or args.workers < 1:
        parser.error("--timeout must be finite and > 0, --workers >= 1")
    return args


def decode_overrides(args: argparse.Namespace) -> dict:
    """DecodeOptions fields the command line changes (none: the evaluated decoding)."""
    if args.num_samples:
        return dict(
            method="sample",
            num_samples=args.num_samples,
            temperature=args.temperature,
            seed=args.seed,
        )
    if args.num_beams == 1:
        return dict(method="greedy")
    if args.num_beams:
        return dict(method="beam", num_beams=args.num_beams)
    return {}


def selection_rule(args: argparse.Namespace) -> str:
    return args.select or ("majority" if args.num_samples else "first")


def _candidates(model: predictor.Model, dataset: spider.Dataset, args) -> list[list[str]]:
    """Every candidate SQL of every example of ``dataset``, in order."""
    config = model.settings.data_config(dataset.db_dir or "")
    if args.batch_size:
        config.eval_batch_size = args.batch_size
    batches, encoded = pipeline.build(
        config, dataset, model.tok, train=False, decoder_start_id=model.decoder_start_id
    )
    mesh = predictor.default_mesh()
    decoder = model.decoder(mesh, **decode_overrides(args))
    return decoder.candidates(
        model.variables, iter(batches), encoded, model.tok, progress=len(dataset.examples) > 1
    )


def _choose(candidates, db_paths, args) -> list[str]:
    rule = selection_rule(args)
    if not selection.executes(candidates, rule):
        return selection.select(None, db_paths, candidates, rule)
    with executor_lib.Executor(args.workers, timeout=args.timeout) as executor:
        return selection.select(executor, db_paths, candidates, rule)


def predict_split(model: predictor.Model, data_dir: str, split: str, args) -> list[str]:
    """One SQL per record of DIR/<split>.json, in file order; a record that could not be
    read gets an empty line, so the lines stay aligned with the gold file."""
    path = os.path.join(data_dir, split if split.endswith(".json") else f"{split}.json")
    if not os.path.isfile(path):
        raise predictor.PredictError(f"--split: {path} does not exist")
    dataset = spider.load_dataset(path)
    for problem in dataset.problems:
        print(f"warning: {problem}", file=sys.stderr)
    candidates = _candidates(model, dataset, args)
    chosen = _choose(candidates, [dataset.db_path(e.db_id) for e in dataset.examples], args)
    skipped = [p.index for p in dataset.problems if p.kind == "malformed"]
    lines = [""] * (max([e.index for e in dataset.examples] + skipped, default=-1) + 1)
    for example, sql in zip(dataset.examples, chosen, strict=True):
        lines[example.index] = sql
    return lines


def _question_dataset(db: str, question: str, evidence: str, workdir: str) -> spider.Dataset:
    """A one-example dataset over the database file ``db`` (linked into ``workdir`` in the
    Spider layout when it is not already in one)."""
    if not schema_lib.is_regular_file(db):
        raise predictor.PredictError(f"--db {db}: database file not found")
    db = os.path.abspath(db)
    db_id = os.path.splitext(os.path.basename(db))[0]
    if not schema_lib.is_plain_db_id(db_id):
        raise predictor.PredictError(f"--db {db}: {db_id!r} is not a plain database name")
    db_dir = os.path.dirname(os.path.dirname(db))
    if os.path.basename(os.path.dirname(db)) != db_id:
        db_dir = workdir
        os.makedirs(os.path.join(db_dir, db_id))
        os.symlink(db, os.path.join(db_dir, db_id, f"{db_id}.sqlite"))
    try:
        schema = schema_lib.schema_from_sqlite(db, db_id)
    except schema_lib.SchemaError as e:
        raise predictor.PredictError(f"--db {db}: {e}") from None
    example = spider.Example(db_id, question, "", evidence, source="question", index=0)
    return spider.Dataset((example,), {db_id: schema}, db_dir, ())


def predict_question(model: predictor.Model, args) -> tuple[str, str]:
    """(SQL, database path) for the command line's question."""
    with tempfile.TemporaryDirectory(prefix="kid_predict_") as workdir:
        dataset = _question_dataset(args.db, args.question, args.evidence, workdir)
        try:
            candidates = _candidates(model, dataset, args)
        except prompts.PromptError as e:
            raise predictor.PredictError(f"question: {e.args[0].split(': ', 1)[-1]}") from None
        path = dataset.db_path(dataset.examples[0].db_id)
        return _choose(candidates, [path], args)[0], path


def _print_rows(db_path: str, sql: str, args) -> None:
    with executor_lib.Executor(1, timeout=args.timeout, max_rows=_ROW_CAP) as executor:
        (result,) = executor.run([(db_path, sql)])
    if result.error is not None:
        print(f"execution error ({result.error}): {result.message}")
        return
    for row in result.rows[: args.max_rows]:
        print(" | ".join(str(v) for v in row))
    if len(result.rows) > args.max_rows:
        print(f"... {len(result.rows) - args.max_rows} more rows")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = predictor.load(args.model, args.model_name)
        if args.db is not None:
            sql, path = predict_question(model, args)
            print(sql)
            if args.execute:
                _print_rows(path, sql, args)
            return 0
        lines = predict_split(model, args.data_dir, args.split, args)
    except (predictor.PredictError, spider.DataError, schema_lib.SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        jsonio.write_text_atomic(args.out, "".join(" ".join(s.split()) + "\n" for s in lines))
    except OSError as e:
        print(f"error: cannot write --out {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {len(lines)} predictions to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
