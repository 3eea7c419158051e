"""A TFDS builder for Spider-format data: split json files -> array_record files.

The data sit in a manual directory (Spider, BIRD, or the embedded benchmark; nothing
is downloaded). The builder writes array_record files, which TFDS reads without
TensorFlow through `as_data_source`, a random-access source grain can index. Records
keep the file order (shuffling disabled), so evaluation rows match gold files line
by line. Schemas and databases are not copied: prompts read them from the manual
directory as for json splits.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from kid.data import spider


@dataclasses.dataclass
class SpiderFormatConfig(tfds.core.BuilderConfig):
    # {TFDS split: json files in the manual directory, concatenated; absent ones skipped}
    split_files: tuple[tuple[str, tuple[str, ...]], ...] = ()


class SpiderFormat(tfds.core.GeneratorBasedBuilder):
    """Spider-format text-to-SQL examples: db_id, question, query, evidence."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point the manual directory at a Spider-format folder: <split>.json files, "
        "tables.json and database/<db_id>/<db_id>.sqlite."
    )
    BUILDER_CONFIGS = [
        SpiderFormatConfig(
            name="spider",
            description="Spider 1.0: train_spider.json + train_others.json, dev.json.",
            split_files=(
                ("train", ("train_spider.json", "train_others.json")),
                ("validation", ("dev.json",)),
            ),
        ),
        SpiderFormatConfig(
            name="bird",
            description="BIRD: train.json, dev.json (with evidence).",
            split_files=(("train", ("train.json",)), ("validation", ("dev.json",))),
        ),
        SpiderFormatConfig(
            name="synth",
            description="kid's embedded benchmark (python -m kid.data.synth).",
            split_files=(
                ("train", ("train.json",)),
                ("validation", ("dev.json",)),
                ("validation_in_domain", ("dev_in_domain.json",)),
            ),
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict(
                {
                    "db_id": tfds.features.Text(),
                    "question": tfds.features.Text(),
                    "query": tfds.features.Text(),
                    "evidence": tfds.features.Text(),
                    "source": tfds.features.Text(),  # json file name
                    "index": tfds.features.Scalar(dtype=np.int32),  # record in that file
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = dl_manager.manual_dir
        splits = {}
        for split, files in self.builder_config.split_files:
            paths = [manual / f for f in files if (manual / f).exists()]
            if paths:
                splits[split] = self._generate_examples(paths)
        if not splits:
            expected = sorted(f for _, files in self.builder_config.split_files for f in files)
            raise FileNotFoundError(f"{manual}: none of {expected} found")
        return splits

    def _generate_examples(self, paths):
        for path in paths:
            examples, _ = spider.read_examples(path)  # malformed records are skipped
            for e in examples:
                yield (
                    f"{path.name}:{e.index}",
                    {
                        "db_id": e.db_id,
                        "question": e.question,
                        "query": e.query,
                        "evidence": e.evidence,
                        "source": path.name,
                        "index": e.index,
                    },
                )


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def builder(data_dir: str, config_name: str = "spider") -> SpiderFormat:
    return SpiderFormat(config=config_name, data_dir=data_dir, file_format="array_record")


def load_examples(
    manual_dir: str | os.PathLike[str],
    split: str,
    *,
    data_dir: str,
    config_name: str = "spider",
) -> list[spider.Example]:
    """The examples of `split`, preparing the array_record files on first use."""
    b = builder(data_dir, config_name)
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    source = b.as_data_source(split=split)
    return [
        spider.Example(
            db_id=_text(r["db_id"]),
            question=_text(r["question"]),
            query=_text(r["query"]),
            evidence=_text(r["evidence"]),
            source=_text(r["source"]),
            index=int(r["index"]),
        )
        for r in (source[i] for i in range(len(source)))
    ]
