"""Measures the data pipeline: prompt + tokenisation time, lengths, padding, shapes, batch rate.

    python benchmarks/data_pipeline.py [--dir /tmp/synth] [--style codes|t5]
    python benchmarks/data_pipeline.py --dir ../shared/data/spider --train train_spider.json

Without --dir it writes the embedded benchmark (`kid.synth`) into a temporary folder.
Trains the byte-level BPE (`data.tokenizer = "bpe"`) on the training prompts and SQL, then
prompts, tokenises and batches train and dev as a training run would, and prints what was
truncated, the token lengths, the share of batch slots that are padding and the number of
distinct batch shapes (compilations) for: the previous pipeline (groups by prompt bucket,
each batch padded to its own longest prompt and target), no grouping, and the groups by
(prompt bucket, target bucket) pair; then the host-side batch throughput.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time

import numpy as np
from absl import app, flags

from kid import synth
from kid.data import batching, encoding, grouping, pipeline, prompts, spider

_DIR = flags.DEFINE_string("dir", "", "Spider-format folder (default: a fresh synth benchmark).")
_TRAIN = flags.DEFINE_string("train", "train.json", "Training split file in --dir.")
_EVAL = flags.DEFINE_string("eval", "dev.json", "Evaluation split file in --dir.")
_STYLE = flags.DEFINE_enum("style", "codes", ["codes", "t5"], "Prompt style (sets the layout).")
_VOCAB = flags.DEFINE_integer("vocab_size", 4096, "BPE vocabulary size.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Global training batch size.")
_PROMPT_BUCKETS = flags.DEFINE_list("prompt_buckets", None, "Prompt buckets (default: config's).")
_TARGET_BUCKETS = flags.DEFINE_list("target_buckets", None, "Target buckets (default: config's).")
_STEPS = flags.DEFINE_integer("steps", 200, "Training batches to time.")


def _percentiles(lengths) -> str:
    p = np.percentile(lengths, [50, 90, 99, 100]).astype(int)
    return f"p50 {p[0]}, p90 {p[1]}, p99 {p[2]}, max {p[3]}"


_LITERAL = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def matched_value_recall(dataset: spider.Dataset, options) -> str:
    """Share of questions whose gold SQL has a string literal that a matched value equals."""
    prompter = prompts.Prompter(dataset.schemas, dataset.db_dir, options)
    hits = total = 0
    for e in dataset.examples:
        literals = {(a or b).strip("%").lower() for a, b in _LITERAL.findall(e.query)}
        db = prompter.values.get(e.db_id)
        if literals and db is not None:
            found = {m.value.lower() for m in db.match(e.question, options.max_matched_values)}
            hits += bool(literals & found)
            total += 1
    return f"{hits}/{total} = {hits / total:.1%}" if total else "no string literals"


def _padding(shapes: list[tuple[int, int]], lengths: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Share of prompt + target slots that are padding, over batches of given shapes
    and (prompt lengths, target lengths)."""
    slots = sum(len(p) * (sp + st) for (sp, st), (p, _) in zip(shapes, lengths, strict=True))
    real = sum(p.sum() + t.sum() for p, t in lengths)
    return 1 - real / slots


def previous_pipeline(split: encoding.EncodedSplit, options: pipeline.BatchOptions, seed: int):
    """One epoch as the pipeline batched before: groups by prompt bucket only (a small group
    joins the next longer one), each batch padded to its own longest prompt and target."""
    prompt_lens = np.array([len(p) for p in split.prompts])
    target_lens = np.array([len(t) for t in split.targets])
    buckets = np.array([batching.bucket(n, options.prompt_buckets) for n in prompt_lens])
    groups, carry = [], np.zeros(0, np.int64)
    for b in np.unique(buckets):
        carry = np.concatenate([carry, np.flatnonzero(buckets == b)])
        if len(carry) >= options.batch_size:
            groups.append(carry)
            carry = np.zeros(0, np.int64)
    if len(carry):
        groups[-1] = np.concatenate([groups[-1], carry])
    rng = np.random.default_rng(seed)
    shapes, lengths = [], []
    for group in groups:
        group = rng.permutation(group)
        for start in range(0, len(group) - options.batch_size + 1, options.batch_size):
            rows = group[start : start + options.batch_size]
            p, t = prompt_lens[rows], target_lens[rows]
            shapes.append(
                (
                    batching.bucket(p.max(), options.prompt_buckets),
                    batching.bucket(t.max(), options.target_buckets),
                )
            )
            lengths.append((p, t))
    return shapes, lengths


def _epoch_of(batches) -> tuple[list[tuple[int, int]], list[tuple[np.ndarray, np.ndarray]]]:
    """Shapes and real lengths of the batches of one epoch of the pipeline."""
    shapes, lengths = [], []
    for b in batches:
        prompt_ids, prompt_mask = batching.prompt_arrays(b)
        p = prompt_ids.shape[1]
        if "decoder_input_ids" in b:
            target_len, target_mask = b["targets"].shape[1], b["decoder_attention_mask"]
        else:
            target_len, target_mask = b["input_ids"].shape[1] - p, b["attention_mask"][:, p:]
        shapes.append((p, target_len))
        lengths.append((prompt_mask.sum(axis=1), target_mask.sum(axis=1)))
    return shapes, lengths


def _print_epoch(name: str, shapes, lengths) -> None:
    counts = {s: shapes.count(s) for s in sorted(set(shapes))}
    print(
        f"  {name}: {len(shapes)} batches, padding {_padding(shapes, lengths):.1%} of the "
        f"slots, {len(counts)} shapes {counts}"
    )


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        folder = _DIR.value
        if not folder:
            folder = os.path.join(tmp, "synth")
            start = time.perf_counter()
            synth.generate(folder)
            print(f"embedded benchmark written in {time.perf_counter() - start:.1f} s")
        run(folder, tmp)


def run(folder: str, tmp: str) -> None:
    config = pipeline.default_config()
    config.dir = folder
    config.prompt_style = _STYLE.value
    config.layout = batching.DECODER_ONLY if _STYLE.value == "codes" else batching.ENCODER_DECODER
    config.tokenizer = pipeline.BPE
    config.bpe_vocab_size = _VOCAB.value
    config.batch_size = _BATCH.value
    if _PROMPT_BUCKETS.value:
        config.prompt_buckets = tuple(int(b) for b in _PROMPT_BUCKETS.value)
    if _TARGET_BUCKETS.value:
        config.target_buckets = tuple(int(b) for b in _TARGET_BUCKETS.value)
    train = spider.load_dataset(os.path.join(folder, _TRAIN.value))
    dev = spider.load_dataset(os.path.join(folder, _EVAL.value))
    print(f"train: {train.summary()}\ndev: {dev.summary()}")
    options = pipeline.prompt_options(config)
    print(f"dev questions with a string literal matched: {matched_value_recall(dev, options)}")

    start = time.perf_counter()
    tok = pipeline.prepare_tokenizer(config, train, save_dir=os.path.join(tmp, "bpe"))
    print(f"BPE ({len(tok)} tokens) trained in {time.perf_counter() - start:.1f} s")
    print(
        f"layout {config.layout}, prompt buckets {tuple(config.prompt_buckets)}, target "
        f"buckets {tuple(config.target_buckets)}, batch {config.batch_size}"
    )
    splits = {}
    for name, dataset, train_mode in (("train", train, True), ("dev", dev, False)):
        start = time.perf_counter()
        _, split = pipeline.build(
            config, dataset, tok, train=train_mode, process_index=0, process_count=1
        )
        seconds = time.perf_counter() - start
        splits[name] = split
        batch_opts = pipeline.batch_options(config, tok, train=train_mode)
        shapes = grouping.split_shapes(split, batch_opts, train=train_mode)
        print(
            f"\n{name}: prompted + tokenised {len(split)} examples in {seconds:.1f} s "
            f"({len(split) / seconds:.0f} examples/s)"
        )
        print(f"  {encoding.format_report(split.report)}")
        print(f"  prompt tokens: {_percentiles([len(p) for p in split.prompts])}")
        print(f"  target tokens: {_percentiles([len(t) for t in split.targets])}")
        print(f"  batch shapes (split_shapes): {len(shapes)} {shapes}")

    print(f"\none training epoch (batch {config.batch_size}):")
    batch_opts = pipeline.batch_options(config, tok, train=True)
    _print_epoch(
        "previous pipeline (prompt-bucket groups)",
        *previous_pipeline(splits["train"], batch_opts, config.seed),
    )
    for grouped in (False, True):
        options = dataclasses.replace(batch_opts, group_by_length=grouped)
        batches = pipeline.train_batches(
            splits["train"],
            options,
            seed=config.seed,
            process_index=0,
            process_count=1,
            num_epochs=1,
        )
        label = "(prompt, target) bucket groups" if grouped else "no grouping"
        _print_epoch(f"group_by_length={grouped}, {label}", *_epoch_of(batches))

    batches = pipeline.train_batches(
        splits["train"], batch_opts, seed=config.seed, process_index=0, process_count=1
    )
    it = pipeline.iterator(batches, config)
    next(it)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        next(it)
    seconds = time.perf_counter() - start
    print(f"\n{_STEPS.value} train batches at {_STEPS.value / seconds:.0f} batches/s")


if __name__ == "__main__":
    app.run(main)
