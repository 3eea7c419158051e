"""Measures the data pipeline on Spider: prompt + tokenisation time, lengths, batch rate.

    python benchmarks/data_pipeline.py --spider_dir ../shared/data/spider [--style codes]

Trains the byte-level BPE of the embedded-benchmark path on Spider train prompts and
SQL, then prompts, tokenises and batches train and dev as a training run would, and
prints what was truncated, the token lengths and the host-side batch throughput.
"""

from __future__ import annotations

import os
import re
import tempfile
import time

import numpy as np
from absl import app, flags

from kid.data import pipeline, prompts, spider
from kid.data import tokenizer as tokenizer_lib

_SPIDER = flags.DEFINE_string("spider_dir", "../shared/data/spider", "Spider folder.")
_STYLE = flags.DEFINE_enum("style", "codes", ["codes", "t5"], "Prompt style.")
_VOCAB = flags.DEFINE_integer("vocab_size", 8000, "BPE vocabulary size.")
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
    return f"{hits}/{total} = {hits / total:.1%}"


def main(argv):
    del argv
    config = pipeline.default_config()
    config.dir = _SPIDER.value
    config.prompt_style = _STYLE.value
    train = spider.load_dataset(os.path.join(config.dir, config.train))
    dev = spider.load_dataset(os.path.join(config.dir, config.eval))
    print(f"train: {train.summary()}\ndev: {dev.summary()}")
    options = pipeline.prompt_options(config)
    print(f"dev questions with a string literal matched: {matched_value_recall(dev, options)}")

    start = time.perf_counter()
    corpus = pipeline.tokenizer_corpus(train, pipeline.prompt_options(config))
    print(f"untruncated prompts for the BPE corpus: {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tok = tokenizer_lib.train_bpe(corpus, os.path.join(tmp, "bpe"), vocab_size=_VOCAB.value)
        print(f"BPE ({len(tok)} tokens) trained in {time.perf_counter() - start:.1f} s")
    for name, dataset, train_mode in (("train", train, True), ("dev", dev, False)):
        start = time.perf_counter()
        batches, split = pipeline.build(
            config, dataset, tok, train=train_mode, process_index=0, process_count=1
        )
        seconds = time.perf_counter() - start
        print(
            f"\n{name}: prompted + tokenised {len(split)} examples in {seconds:.1f} s "
            f"({len(split) / seconds:.0f} examples/s)"
        )
        print(f"  {split.report['prompts']}; targets cut: {split.report['truncated_targets']}")
        print(f"  prompt tokens: {_percentiles([len(p) for p in split.prompts])}")
        print(f"  target tokens: {_percentiles([len(t) for t in split.targets])}")
    for grouped in (True, False):
        config.group_by_length = grouped
        batches, _ = pipeline.build(
            config, train, tok, train=True, process_index=0, process_count=1
        )
        it = pipeline.iterator(batches, config)
        next(it)
        shapes, real, start = {}, [], time.perf_counter()
        for _ in range(_STEPS.value):
            batch = next(it)
            p = batch["prompt_ids"].shape[1]
            key = (p, batch["input_ids"].shape[1] - p)
            shapes[key] = shapes.get(key, 0) + 1
            real.append(batch["attention_mask"].mean())
        seconds = time.perf_counter() - start
        print(
            f"\ngroup_by_length={grouped}: {_STEPS.value} train batches of {config.batch_size} "
            f"at {_STEPS.value / seconds:.0f} batches/s; real tokens {np.mean(real):.0%} of "
            f"the batch; (P, T) shapes: {dict(sorted(shapes.items()))}"
        )


if __name__ == "__main__":
    app.run(main)
