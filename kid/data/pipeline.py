"""grain input pipelines: a Spider-format split -> prompts -> token ids -> fixed-shape batches.

A split is prompted and tokenised once per host (`encode_split`); grain then shuffles
it with a seed, forms global batches and gives each host its rows:

* Every host enumerates the same global batches and keeps rows
  [i * B / n, (i + 1) * B / n) of each, so hosts see disjoint examples and the same
  number of batches, and the rows line up with
  `jax.make_array_from_process_local_data`.
* Batch shapes come from a few length buckets chosen from the lengths of the whole
  global batch, so all hosts agree on them and a jitted step compiles once per
  (prompt bucket, target bucket) pair.
* Training batches draw from groups of similar prompt length (`length_groups`); each
  epoch drops the partial batch of each group and the next epoch reshuffles;
  evaluation pads the last batch with zero-weight copies so each example is scored
  exactly once (`example_index` maps rows back to examples, -1 for padding).
* The iterator is a grain `DatasetIterator`: `get_state()` / `set_state()` restore it
  exactly (a JSON-able dict; orbax can save it with grain.checkpoint.CheckpointSave).

The user-facing options are the `data` ConfigDict fields read by `prompt_options`,
`batch_options` and `load_split` (see `default_config`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from kid.data import batching, prompts, spider
from kid.data import tokenizer as tokenizer_lib
from kid.data import values as values_lib


def default_config() -> ml_collections.ConfigDict:
    """The `data` section of an experiment config, with its defaults."""
    c = ml_collections.ConfigDict()
    c.dir = ""  # Spider-format folder: tables.json, database/ (or BIRD's layout)
    c.source = "json"  # "json": split files in `dir`; "tfds": the array_record builder
    c.train = "train_spider.json"  # json: a file in `dir`; tfds: a split name ("train")
    c.eval = "dev.json"
    c.tfds_data_dir = ""  # tfds: where the builder writes its files
    c.tfds_config = "spider"  # tfds: builder config (see kid.data.tfds_spider)
    c.prompt_style = "codes"  # "codes" for decoder LMs, "t5" for T5
    c.use_evidence = False  # BIRD's evidence field in the prompt
    c.num_sample_values = 2
    c.max_sample_chars = 25
    c.max_matched_values = 10
    c.tokenizer = ""  # HF tokenizer directory
    c.mask_token = ml_collections.config_dict.placeholder(str)  # e.g. "<extra_id_0>"
    c.add_missing_tokens = True  # add tokens for characters of gold SQL the vocab lacks
    c.layout = batching.DECODER_ONLY  # or batching.ENCODER_DECODER
    c.prompt_buckets = (256, 512, 1024)  # the largest is the prompt token budget
    c.target_buckets = (64, 128)  # longer targets are cut (and counted)
    c.batch_size = 16  # global, over all hosts
    c.eval_batch_size = 32
    c.seed = 0
    c.group_by_length = True  # training batches of similar prompt length (less padding)
    c.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever
    c.worker_count = 0  # grain worker processes (0: threads in this process)
    c.read_threads = 2
    c.prefetch = 4  # batches read ahead
    return c


def prompt_options(config: ml_collections.ConfigDict) -> prompts.PromptOptions:
    return prompts.PromptOptions(
        style=config.prompt_style,
        use_evidence=config.use_evidence,
        max_matched_values=config.max_matched_values,
        values=values_lib.ValueOptions(
            num_samples=config.num_sample_values, max_sample_chars=config.max_sample_chars
        ),
    )


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    layout: str
    batch_size: int  # global
    prompt_buckets: tuple[int, ...]
    target_buckets: tuple[int, ...]
    pad_id: int
    decoder_start_id: int  # encoder-decoder: first decoder input (T5: the pad id)

    def __post_init__(self):
        if self.layout not in batching.LAYOUTS:
            raise ValueError(f"data.layout {self.layout!r} is not one of {batching.LAYOUTS}")


def batch_options(
    config: ml_collections.ConfigDict, tok: tokenizer_lib.Tokenizer, *, train: bool
) -> BatchOptions:
    return BatchOptions(
        layout=config.layout,
        batch_size=config.batch_size if train else config.eval_batch_size,
        prompt_buckets=tuple(sorted(config.prompt_buckets)),
        target_buckets=tuple(sorted(config.target_buckets)),
        pad_id=tok.pad_id,
        decoder_start_id=tok.pad_id,
    )


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """Token ids of one split; a grain data source of {"prompt", "target", "index"}."""

    examples: tuple[spider.Example, ...]
    prompts: tuple[np.ndarray, ...]  # int32, special tokens included
    targets: tuple[np.ndarray, ...]  # int32, normalised SQL + EOS
    report: dict  # what was left out: prompt items, databases, target tokens

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return {"prompt": self.prompts[index], "target": self.targets[index], "index": index}


class _RecentEncodings:
    """Prompt token ids, remembered for the last few texts measured: the prompt the
    Prompter settles on is among them, so it is not tokenised a second time."""

    def __init__(self, tok: tokenizer_lib.Tokenizer, size: int = 4):
        self._tok = tok
        self._size = size
        self._ids: collections.OrderedDict[str, list[int]] = collections.OrderedDict()

    def ids(self, text: str) -> list[int]:
        if text in self._ids:
            self._ids.move_to_end(text)
        else:
            self._ids[text] = self._tok.encode([text], add_special_tokens=True)[0]
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
        return self._ids[text]

    def count(self, text: str) -> int:
        return len(self.ids(text))


def encode_split(
    dataset: spider.Dataset,
    tok: tokenizer_lib.Tokenizer,
    options: prompts.PromptOptions,
    *,
    prompt_budget: int,
    max_target_len: int,
) -> EncodedSplit:
    """Prompts and tokenises every example.

    Prompts fit `prompt_budget` tokens (see `prompts.Prompter`); targets are the
    normalised SQL + EOS, and longer than `max_target_len` they are cut (EOS lost)
    and counted in the report.
    """
    encodings = _RecentEncodings(tok)
    prompter = prompts.Prompter(
        dataset.schemas,
        dataset.db_dir,
        options,
        count_tokens=encodings.count,
        budget=prompt_budget,
    )
    prompt_ids = [encodings.ids(prompter(e).text) for e in dataset.examples]
    sql = [prompts.normalize_sql(e.query) for e in dataset.examples]
    target_ids = [ids + [tok.eos_id] for ids in tok.encode(sql, add_special_tokens=False)]
    cut = sum(len(t) > max_target_len for t in target_ids)
    report = {
        "examples": len(prompt_ids),
        "prompts": prompter.stats.summary(),
        "schema_only": prompter.stats.schema_only,
        "truncated_prompts": prompter.stats.truncated,
        "dropped_prompt_items": dict(prompter.stats.dropped),
        "truncated_targets": cut,
    }
    return EncodedSplit(
        tuple(dataset.examples),
        tuple(np.asarray(p, np.int32) for p in prompt_ids),
        tuple(np.asarray(t[:max_target_len], np.int32) for t in target_ids),
        report,
    )


def tokenizer_corpus(dataset: spider.Dataset, options: prompts.PromptOptions) -> list[str]:
    """Untruncated prompts and normalised SQL: the text to train a BPE tokenizer on."""
    prompter = prompts.Prompter(dataset.schemas, dataset.db_dir, options)
    return [prompter(e).text for e in dataset.examples] + [
        prompts.normalize_sql(e.query) for e in dataset.examples
    ]


def _host_rows(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} hosts")
    local = global_batch // process_count
    return slice(process_index * local, (process_index + 1) * local)


def collate(elements: list[dict], *, options: BatchOptions, rows: slice) -> dict[str, np.ndarray]:
    """A global batch of elements -> this host's rows in the configured layout.

    Padding elements (index -1) become zero-weight copies of the global batch's first
    row, which is always a real example: no row is empty, so nothing attends to nothing.
    """
    prompt_len = batching.bucket(max(len(e["prompt"]) for e in elements), options.prompt_buckets)
    target_len = batching.bucket(max(len(e["target"]) for e in elements), options.target_buckets)
    first = elements[0]
    local = [e if e["index"] >= 0 else {**first, "index": -1} for e in elements[rows]]
    weights = np.array([e["index"] >= 0 for e in local], np.float32)
    index = np.array([e["index"] for e in local], np.int32)
    prompt_ids = [e["prompt"] for e in local]
    target_ids = [e["target"] for e in local]
    if options.layout == batching.ENCODER_DECODER:
        return batching.encoder_decoder_batch(
            prompt_ids,
            target_ids,
            weights,
            index,
            prompt_len=prompt_len,
            target_len=target_len,
            pad_id=options.pad_id,
            decoder_start_id=options.decoder_start_id,
        )
    return batching.decoder_only_batch(
        prompt_ids,
        target_ids,
        weights,
        index,
        prompt_len=prompt_len,
        target_len=target_len,
        pad_id=options.pad_id,
    )


def length_groups(
    split: EncodedSplit, options: BatchOptions, *, by_length: bool
) -> list[np.ndarray]:
    """Example indices grouped by prompt bucket, so that a batch is padded to its own
    bucket rather than to the longest prompt of a random batch. A group smaller than
    a batch joins the next longer one (and the last such remainder the longest)."""
    if not by_length:
        return [np.arange(len(split))]
    lengths = np.array([len(p) for p in split.prompts])
    buckets = np.array([batching.bucket(n, options.prompt_buckets) for n in lengths])
    groups, carry = [], np.zeros(0, np.int64)
    for b in np.unique(buckets):
        carry = np.concatenate([carry, np.flatnonzero(buckets == b)])
        if len(carry) >= options.batch_size:
            groups.append(carry)
            carry = np.zeros(0, np.int64)
    if len(carry):
        groups[-1] = np.concatenate([groups[-1], carry])
    return groups


def _collate_indices(
    indices: np.ndarray, *, split: EncodedSplit, options: BatchOptions, rows: slice
) -> dict[str, np.ndarray]:
    return collate([split[int(i)] for i in indices], options=options, rows=rows)


def _seed(seed: int, stream: int) -> int:
    """Independent 32-bit seeds for the shuffles of one pipeline."""
    return int(np.random.default_rng([seed, stream]).integers(2**32))


def train_batches(
    split: EncodedSplit,
    options: BatchOptions,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    num_epochs: int | None = None,
    group_by_length: bool = True,
) -> grain.MapDataset:
    """Shuffled batches, reshuffled each epoch.

    Each length group (see `length_groups`) is shuffled and cut into whole batches
    (the remainder waits for a later epoch's shuffle), then the batches of all groups
    are shuffled together.
    """
    if len(split) < options.batch_size:
        raise ValueError(
            f"{len(split)} training examples are fewer than one batch of {options.batch_size}"
        )
    rows = _host_rows(options.batch_size, process_index, process_count)
    groups = length_groups(split, options, by_length=group_by_length)
    per_group = [
        grain.MapDataset.source(group.tolist())
        .shuffle(seed=_seed(seed, i + 1))
        .batch(options.batch_size, drop_remainder=True)
        for i, group in enumerate(groups)
    ]
    return (
        grain.MapDataset.concatenate(per_group)
        .shuffle(seed=_seed(seed, 0))
        .repeat(num_epochs)
        .map(functools.partial(_collate_indices, split=split, options=options, rows=rows))
    )


@dataclasses.dataclass(frozen=True)
class _PaddedSource:
    """`split` followed by padding elements up to `length`."""

    split: EncodedSplit
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < len(self.split):
            return self.split[index]
        empty = np.zeros(0, np.int32)
        return {"prompt": empty, "target": empty, "index": -1}


def eval_batches(
    split: EncodedSplit, options: BatchOptions, *, process_index: int, process_count: int
) -> grain.MapDataset:
    """Batches in split order; the last one padded with zero-weight rows."""
    rows = _host_rows(options.batch_size, process_index, process_count)
    length = math.ceil(len(split) / options.batch_size) * options.batch_size
    return grain.MapDataset.source(_PaddedSource(split, length)).batch(
        options.batch_size, batch_fn=functools.partial(collate, options=options, rows=rows)
    )


def _mark_flags_parsed(*unused_worker_index_and_count: int) -> None:
    """grain reads absl flags when it starts workers (and in them); outside an absl app
    they are unparsed and reading one raises, so their defaults are declared final."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def iterator(batches: grain.MapDataset, config: ml_collections.ConfigDict) -> grain.DatasetIterator:
    """A checkpointable iterator, read by threads or (worker_count > 0) by processes."""
    ds = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch)
    )
    if config.worker_count > 0:
        _mark_flags_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.worker_count),
            worker_init_fn=_mark_flags_parsed,
        )
    return iter(ds)


def load_split(config: ml_collections.ConfigDict, split: str) -> spider.Dataset:
    """The examples of `split` with their schemas and databases, from json or TFDS."""
    if config.source == "json":
        return spider.load_dataset(os.path.join(config.dir, split))
    if config.source != "tfds":
        raise ValueError(f"data.source {config.source!r} is not 'json' or 'tfds'")
    from kid.data import tfds_spider  # TFDS is imported only when used: it is slow to load

    examples = tfds_spider.load_examples(
        config.dir, split, data_dir=config.tfds_data_dir, config_name=config.tfds_config
    )
    # Schemas and databases stay in the manual directory, beside the split's json files.
    sources = {e.source for e in examples}
    layouts = {spider.layout_for(os.path.join(config.dir, s)) for s in sources}
    if len(layouts) != 1:
        raise ValueError(f"TFDS split {split!r} mixes table files and databases: {layouts}")
    return spider.assemble(examples, (), *layouts.pop())


def prepare_tokenizer(
    config: ml_collections.ConfigDict, train: spider.Dataset
) -> tokenizer_lib.Tokenizer:
    """The configured tokenizer with its mask token and, if configured, tokens for
    characters of the training SQL it cannot represent (save it with the checkpoint)."""
    tok = tokenizer_lib.load_tokenizer(config.tokenizer, mask_token=config.mask_token)
    if config.add_missing_tokens:
        tokenizer_lib.add_missing_tokens(
            tok, [prompts.normalize_sql(e.query) for e in train.examples]
        )
    return tok


def build(
    config: ml_collections.ConfigDict,
    dataset: spider.Dataset,
    tok: tokenizer_lib.Tokenizer,
    *,
    train: bool,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[grain.MapDataset, EncodedSplit]:
    """Batches of `dataset` for this host (default: jax's process index and count);
    the split's report (what prompts and targets lost) is logged."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    options = batch_options(config, tok, train=train)
    split = encode_split(
        dataset,
        tok,
        prompt_options(config),
        prompt_budget=options.prompt_buckets[-1],
        max_target_len=options.target_buckets[-1],
    )
    logging.info("%s data: %s", "train" if train else "eval", split.report)
    if train:
        batches = train_batches(
            split,
            options,
            seed=config.seed,
            process_index=process_index,
            process_count=process_count,
            num_epochs=config.num_epochs,
            group_by_length=config.group_by_length,
        )
    else:
        batches = eval_batches(
            split, options, process_index=process_index, process_count=process_count
        )
    return batches, split
