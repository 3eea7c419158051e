"""grain input pipelines: a Spider-format split -> prompts -> token ids -> fixed-shape batches.

A split is prompted and tokenised once per host (`encoding.encode_split`); grain then shuffles
it with a seed, forms global batches and gives each host its rows:

* Every host enumerates the same global batches and keeps rows
  [i * B / n, (i + 1) * B / n) of each, so hosts see disjoint examples and the same
  number of batches, and the rows line up with
  `jax.make_array_from_process_local_data`.
* Batch shapes (prompt_len, target_len) come from a few length buckets, chosen from the
  whole global batch, so all hosts agree on them (`kid.data.grouping`: a jitted step
  compiles once per shape, and `grouping.split_shapes` lists those a split produces).
* Training batches draw from the length groups of `grouping.length_groups` (one per
  (prompt bucket, target bucket) pair, small ones merged into a larger shape); every batch
  of a group has the group's shape. Each epoch drops the partial batch of each group and
  the next epoch reshuffles. Evaluation keeps split order and pads the last batch with
  zero-weight copies so each example is scored exactly once (`example_index` maps rows
  back to examples, -1 for padding).
* Encoder inputs (the encoder-decoder layout) end with exactly one EOS, as HF T5
  tokenizers make them, whatever the tokenizer adds; decoder-only prompts get nothing.
* The iterator is a grain `DatasetIterator`: `get_state()` / `set_state()` restore it
  exactly (a JSON-able dict; orbax can save it with grain.checkpoint.CheckpointSave).

The user-facing options are the `data` ConfigDict fields read by `prompt_options`,
`batch_options`, `prepare_tokenizer` and `load_split` (see `default_config`), checked
together by `check_config`. `build` returns the split's report (`encoding.format_report` makes it
one line to print; it is logged as a warning when anything was cut).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from kid.data import batching, encoding, grouping, prompts, spider
from kid.data import tokenizer as tokenizer_lib
from kid.data import values as values_lib

BPE = "bpe"  # data.tokenizer: train kid's byte-level BPE on the training split
SOURCES = ("json", "tfds")
# The prompt style each layout's models are trained with.
_STYLE_OF_LAYOUT = {batching.DECODER_ONLY: "codes", batching.ENCODER_DECODER: "t5"}


def default_config() -> ml_collections.ConfigDict:
    """The `data` section of an experiment config, with its defaults."""
    c = ml_collections.ConfigDict()
    c.dir = ""  # Spider-format folder: tables.json, database/ (or BIRD's layout)
    c.source = "json"  # "json": split files in `dir`; "tfds": the array_record builder
    c.train = "train_spider.json"  # json: a file in `dir`; tfds: a split name ("train")
    c.eval = "dev.json"
    c.tfds_data_dir = ""  # tfds: where the builder writes its files
    c.tfds_config = "spider"  # tfds: builder config (see kid.data.tfds_spider)
    c.prompt_style = "codes"  # "codes" for decoder_only, "t5" for encoder_decoder (T5)
    c.use_evidence = False  # BIRD's evidence field in the prompt
    c.num_sample_values = 2
    c.max_sample_chars = 25
    c.max_matched_values = 10
    # An HF tokenizer directory, or "bpe": kid's byte-level BPE trained on the training
    # split's untruncated prompts and SQL. prepare_tokenizer keeps it in its save_dir and
    # loads it from there when the directory already holds one (a resumed run, same ids).
    c.tokenizer = ""
    c.bpe_vocab_size = 4096  # "bpe": requested size (a small corpus may give fewer tokens)
    c.bpe_min_frequency = 2  # "bpe": pairs seen fewer times are not merged
    c.bpe_split_digits = True  # "bpe": one token per digit (numbers are copied digit by digit)
    # KID's mask token, e.g. "<extra_id_0>"; None: the saved one ("bpe" reserves <mask>).
    c.mask_token = ml_collections.config_dict.placeholder(str)
    c.add_missing_tokens = True  # add tokens for characters of gold SQL the vocab lacks
    c.layout = batching.DECODER_ONLY  # or batching.ENCODER_DECODER
    c.prompt_buckets = (256, 512, 1024)  # the largest is the prompt token budget
    c.target_buckets = (64, 128)  # longer targets are cut (and counted)
    c.batch_size = 16  # global, over all hosts
    c.eval_batch_size = 32
    c.seed = 0
    # Training batches grouped by (prompt bucket, target bucket): less padding, one shape
    # per group. False: one group, every batch padded to the split's largest shape.
    c.group_by_length = True
    # A group with fewer than this many batches joins a larger shape: fewer shapes (compiles)
    # for a little more padding (embedded benchmark, 5 x 4 buckets: 1 -> 13 shapes, 12.8%
    # padding; 4 -> 10 shapes, 13.1%).
    c.min_group_batches = 1
    c.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever
    # Models train on the first N examples of data.train (0: all); the tokenizer, a shipped
    # teacher's digest and the eval splits still see the whole file.
    c.train_examples = 0
    c.worker_count = 0  # grain worker processes (0: threads in this process)
    c.read_threads = 2
    c.prefetch = 4  # batches read ahead
    return c


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _config_errors(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with a `data` config, one message per field (or pair of fields)."""
    errors = []
    if config.source not in SOURCES:
        errors.append(f"data.source {config.source!r} is not one of {SOURCES}")
    if config.prompt_style not in prompts.STYLES:
        errors.append(f"data.prompt_style {config.prompt_style!r} is not one of {prompts.STYLES}")
    if config.layout not in batching.LAYOUTS:
        errors.append(f"data.layout {config.layout!r} is not one of {batching.LAYOUTS}")
    elif config.prompt_style in prompts.STYLES:
        style = _STYLE_OF_LAYOUT[config.layout]
        if config.prompt_style != style:
            errors.append(
                f"data.prompt_style {config.prompt_style!r} does not fit data.layout "
                f"{config.layout!r}: its models are prompted with {style!r}"
            )
    for name in ("prompt_buckets", "target_buckets"):
        buckets = config[name]
        if not buckets:
            errors.append(f"data.{name} is empty")
        elif not all(_positive_int(b) for b in buckets):
            errors.append(f"data.{name} {tuple(buckets)} must be positive integers")
    for name in ("batch_size", "eval_batch_size", "min_group_batches"):
        if not _positive_int(config[name]):
            errors.append(f"data.{name} must be a positive integer, got {config[name]!r}")
    if config.get("train_examples", 0) != 0 and not _positive_int(config.train_examples):
        errors.append(
            f"data.train_examples must be 0 (all) or positive, got {config.train_examples!r}"
        )
    if config.tokenizer == BPE:
        if not _positive_int(config.bpe_vocab_size):
            errors.append(f"data.bpe_vocab_size must be positive, got {config.bpe_vocab_size!r}")
        if not _positive_int(config.bpe_min_frequency):
            errors.append(
                f"data.bpe_min_frequency must be positive, got {config.bpe_min_frequency!r}"
            )
    return errors


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a `data` config whose fields are invalid or do not fit together (a T5 prompt
    for a decoder-only model...), naming the fields, before any data is read."""
    errors = _config_errors(config)
    if errors:
        raise ValueError("invalid data config: " + "; ".join(errors))


def prompt_options(config: ml_collections.ConfigDict) -> prompts.PromptOptions:
    check_config(config)
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
    group_by_length: bool = True  # training: groups of one (prompt, target) bucket pair
    min_group_batches: int = 1  # training: a smaller group joins a larger shape

    def __post_init__(self):
        if self.layout not in batching.LAYOUTS:
            raise ValueError(f"data.layout {self.layout!r} is not one of {batching.LAYOUTS}")
        if not self.prompt_buckets or not self.target_buckets:
            raise ValueError("prompt_buckets and target_buckets must not be empty")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")


def batch_options(
    config: ml_collections.ConfigDict,
    tok: tokenizer_lib.Tokenizer,
    *,
    train: bool,
    decoder_start_id: int | None = None,
) -> BatchOptions:
    """Batch layout and sizes of a `data` config.

    decoder_start_id: the encoder-decoder model's first decoder input; pass the model's
    (``config.decoder_start_token_id``) so the two cannot differ
    (``kid.models.configs.check_tokenizer_agrees`` compares them). None: the tokenizer's
    pad id, T5's convention.
    """
    check_config(config)
    return BatchOptions(
        layout=config.layout,
        batch_size=config.batch_size if train else config.eval_batch_size,
        prompt_buckets=tuple(sorted(config.prompt_buckets)),
        target_buckets=tuple(sorted(config.target_buckets)),
        pad_id=tok.pad_id,
        decoder_start_id=tok.pad_id if decoder_start_id is None else decoder_start_id,
        group_by_length=config.group_by_length,
        min_group_batches=config.min_group_batches,
    )


def max_new_tokens(options: BatchOptions) -> int:
    """Decoding budget: the largest target bucket (longer gold targets are cut anyway)."""
    return max(options.target_buckets)


def _host_rows(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} hosts")
    local = global_batch // process_count
    return slice(process_index * local, (process_index + 1) * local)


def collate(
    elements: list[dict], *, options: BatchOptions, rows: slice, shape: grouping.Shape | None = None
) -> dict[str, np.ndarray]:
    """A global batch of elements -> this host's rows in the configured layout.

    `shape` fixes (prompt_len, target_len) (a training group's); None: the buckets of the
    global batch's longest prompt and target. Padding elements (index -1) become
    zero-weight copies of the global batch's first row, which is always a real example:
    no row is empty, so nothing attends to nothing.
    """
    prompt_len, target_len = grouping.batch_shape(elements, options) if shape is None else shape
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


def _with_shape(indices: np.ndarray, *, shape: grouping.Shape) -> tuple[np.ndarray, grouping.Shape]:
    return indices, shape


def _collate_indices(
    batch: tuple[np.ndarray, grouping.Shape],
    *,
    split: encoding.EncodedSplit,
    options: BatchOptions,
    rows: slice,
) -> dict[str, np.ndarray]:
    indices, shape = batch
    return collate([split[int(i)] for i in indices], options=options, rows=rows, shape=shape)


def _seed(seed: int, stream: int) -> int:
    """Independent 32-bit seeds for the shuffles of one pipeline."""
    return int(np.random.default_rng([seed, stream]).integers(2**32))


def train_batches(
    split: encoding.EncodedSplit,
    options: BatchOptions,
    *,
    seed: int,
    process_index: int,
    process_count: int,
    num_epochs: int | None = None,
    group_by_length: bool | None = None,
) -> grain.MapDataset:
    """Shuffled batches, reshuffled each epoch.

    Each length group (see `grouping.length_groups`; `group_by_length` None: the
    options') is shuffled and cut into whole batches of its shape (the remainder waits for
    a later epoch's shuffle), then the batches of all groups are shuffled together.
    """
    if len(split) < options.batch_size:
        raise ValueError(
            f"{len(split)} training examples are fewer than one batch of {options.batch_size}"
        )
    rows = _host_rows(options.batch_size, process_index, process_count)
    groups = grouping.length_groups(split, options, by_length=group_by_length)
    per_group = [
        grain.MapDataset.source(group.indices.tolist())
        .shuffle(seed=_seed(seed, i + 1))
        .batch(options.batch_size, drop_remainder=True)
        .map(functools.partial(_with_shape, shape=group.shape))
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

    split: encoding.EncodedSplit
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < len(self.split):
            return self.split[index]
        empty = np.zeros(0, np.int32)
        return {"prompt": empty, "target": empty, "index": -1}


def eval_batches(
    split: encoding.EncodedSplit, options: BatchOptions, *, process_index: int, process_count: int
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


def _holds_tokenizer(path: str) -> bool:
    """Whether `path` holds a tokenizer kid saved; refuses to overwrite anything else."""
    if os.path.isfile(os.path.join(path, tokenizer_lib.KID_FILE)):
        return True
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(
            f"tokenizer save_dir {path} exists but holds no tokenizer kid saved "
            f"({tokenizer_lib.KID_FILE} missing): refusing to replace it"
        )
    return False


def prepare_tokenizer(
    config: ml_collections.ConfigDict, train: spider.Dataset, *, save_dir: str | None = None
) -> tokenizer_lib.Tokenizer:
    """The configured tokenizer with its mask token and, if configured, tokens for
    characters of the training SQL it cannot represent.

    ``data.tokenizer = "bpe"`` trains kid's byte-level BPE (``data.bpe_vocab_size``,
    ``data.bpe_min_frequency``) on the training split's untruncated prompts and SQL
    (`encoding.tokenizer_corpus`); it needs `save_dir`. With `save_dir`, the prepared tokenizer is
    saved there, and a directory that already holds one is loaded instead of preparing it
    again (a resumed run must see the same ids): delete it to change the tokenizer.
    """
    check_config(config)
    if not config.tokenizer:
        raise ValueError('data.tokenizer is not set: an HF tokenizer directory or "bpe"')
    if save_dir is not None and _holds_tokenizer(save_dir):
        return tokenizer_lib.load_tokenizer(save_dir, mask_token=config.mask_token)
    if config.tokenizer == BPE:
        if save_dir is None:
            raise ValueError(
                'data.tokenizer "bpe" is trained here: prepare_tokenizer needs save_dir'
            )
        corpus = encoding.tokenizer_corpus(train, prompt_options(config))
        tok = tokenizer_lib.train_bpe(
            corpus,
            save_dir,
            vocab_size=config.bpe_vocab_size,
            min_frequency=config.bpe_min_frequency,
            split_digits=config.bpe_split_digits,
        )  # <mask> is reserved: the mask token unless data.mask_token names another
        tok = tokenizer_lib.with_mask_token(tok, config.mask_token)
    else:
        tok = tokenizer_lib.load_tokenizer(config.tokenizer, mask_token=config.mask_token)
    if config.add_missing_tokens:
        tokenizer_lib.add_missing_tokens(
            tok, [prompts.normalize_sql(e.query) for e in train.examples]
        )
    if save_dir is not None:
        tokenizer_lib.save_tokenizer(tok, save_dir)
    return tok


def build(
    config: ml_collections.ConfigDict,
    dataset: spider.Dataset,
    tok: tokenizer_lib.Tokenizer,
    *,
    train: bool,
    process_index: int | None = None,
    process_count: int | None = None,
    decoder_start_id: int | None = None,
) -> tuple[grain.MapDataset, encoding.EncodedSplit]:
    """Batches of `dataset` for this host (default: jax's process index and count).

    `decoder_start_id`: see `batch_options`. The split's report (what prompts and targets
    lost; `encoding.format_report` prints it) is logged, as a warning when anything was cut.
    """
    check_config(config)
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    options = batch_options(config, tok, train=train, decoder_start_id=decoder_start_id)
    split = encoding.encode_split(
        dataset,
        tok,
        prompt_options(config),
        prompt_budget=options.prompt_buckets[-1],
        max_target_len=options.target_buckets[-1],
        end_with_eos=options.layout == batching.ENCODER_DECODER,
    )
    log = logging.warning if encoding.lost_anything(split.report) else logging.info
    log("%s data: %s", "train" if train else "eval", encoding.format_report(split.report))
    if train:
        batches = train_batches(
            split,
            options,
            seed=config.seed,
            process_index=process_index,
            process_count=process_count,
            num_epochs=config.num_epochs,
        )
    else:
        batches = eval_batches(
            split, options, process_index=process_index, process_count=process_count
        )
    return batches, split
