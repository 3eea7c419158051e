"""Batch shapes and length groups of an encoded split (plain numpy, host side).

A batch's shape is its (prompt_len, target_len): the prompt and target buckets that hold
its longest prompt and target (`batch_shape`). A jitted step compiles once per shape, so
`split_shapes` lists the shapes the pipeline makes of a split (to bound and log compiles).

Training batches draw from groups of examples with the same (prompt bucket, target
bucket) pair (`length_groups`), so a batch is padded to its group's shape rather than to
the longest example of a random batch. A group smaller than ``min_group_batches`` batches
joins a larger shape (`merge_small_groups`): fewer shapes for a little more padding.

The split and options are `kid.data.pipeline`'s `EncodedSplit` and `BatchOptions`; this
module reads only the fields named by `Split` and `GroupOptions`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from kid.data import batching

Shape = tuple[int, int]  # (prompt_len, target_len) of a batch


class GroupOptions(Protocol):
    """What grouping reads of `pipeline.BatchOptions`."""

    @property
    def batch_size(self) -> int: ...  # global
    @property
    def prompt_buckets(self) -> Sequence[int]: ...
    @property
    def target_buckets(self) -> Sequence[int]: ...
    @property
    def group_by_length(self) -> bool: ...
    @property
    def min_group_batches(self) -> int: ...


class Split(Protocol):
    """What grouping reads of `encoding.EncodedSplit`: token ids and {"prompt", "target"}."""

    @property
    def prompts(self) -> Sequence[np.ndarray]: ...
    @property
    def targets(self) -> Sequence[np.ndarray]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict: ...


def _shape(prompt_len: int, target_len: int, options: GroupOptions) -> Shape:
    """The bucketed (prompt_len, target_len) that holds these lengths."""
    return (
        batching.bucket(prompt_len, options.prompt_buckets),
        batching.bucket(target_len, options.target_buckets),
    )


def batch_shape(elements: list[dict], options: GroupOptions) -> Shape:
    """Shape of a global batch padded to its longest prompt's and target's buckets."""
    return _shape(
        max(len(e["prompt"]) for e in elements),
        max(len(e["target"]) for e in elements),
        options,
    )


class Group(NamedTuple):
    """Training examples batched together; every batch of them has `shape`."""

    shape: Shape
    indices: np.ndarray  # example indices, ascending


def _cost(shape: Shape) -> int:
    return shape[0] + shape[1]


def _join(a: Shape, b: Shape) -> Shape:
    return max(a[0], b[0]), max(a[1], b[1])


def merge_small_groups(sizes: dict[Shape, int], min_size: int) -> dict[Shape, Shape]:
    """Where each shape's examples go so that every group holds at least `min_size`.

    Smallest first (by prompt_len + target_len), a group with fewer than `min_size`
    examples joins the cheapest group whose shape holds it; with none, it joins the group
    whose common (elementwise larger) shape adds the fewest padded slots. One group is
    left alone whatever its size. Returns {shape: shape of its final group}.
    """
    members = {s: [s] for s, n in sizes.items() if n > 0}
    count = {s: sizes[s] for s in members}
    while len(count) > 1:
        small = [s for s in count if count[s] < min_size]
        if not small:
            break
        shape = min(small, key=lambda s: (_cost(s), s))
        n, moved = count.pop(shape), members.pop(shape)
        holders = [s for s in count if s[0] >= shape[0] and s[1] >= shape[1]]
        if holders:
            into = min(holders, key=lambda s: (_cost(s), s))
        else:

            def added(s: Shape, shape: Shape = shape, n: int = n) -> int:
                joined = _cost(_join(s, shape))
                return n * (joined - _cost(shape)) + count[s] * (joined - _cost(s))

            other = min(count, key=lambda s: (added(s), s))
            into = _join(other, shape)
            n += count.pop(other)
            moved += members.pop(other)
        count[into] = count.get(into, 0) + n
        members[into] = members.get(into, []) + moved
    return {s: final for final, group in members.items() for s in group}


def length_groups(
    split: Split, options: GroupOptions, *, by_length: bool | None = None
) -> list[Group]:
    """Training examples grouped by their (prompt bucket, target bucket) pair, so a batch
    is padded to its group's shape rather than to the longest example of a random batch.

    A group of fewer than ``options.min_group_batches`` batches joins a larger shape
    (`merge_small_groups`). Without `by_length` (default: ``options.group_by_length``)
    there is one group, of the split's largest shape. Groups come in ascending shape order.
    """
    by_length = options.group_by_length if by_length is None else by_length
    natural = [
        _shape(len(p), len(t), options) for p, t in zip(split.prompts, split.targets, strict=True)
    ]
    if not natural:
        return []
    if not by_length:
        largest = (max(s[0] for s in natural), max(s[1] for s in natural))
        return [Group(largest, np.arange(len(split)))]
    min_size = options.batch_size * options.min_group_batches
    final = merge_small_groups(collections.Counter(natural), min_size)
    assigned = [final[s] for s in natural]
    return [
        Group(shape, np.array([i for i, a in enumerate(assigned) if a == shape], np.int64))
        for shape in sorted(set(assigned))
    ]


def split_shapes(split: Split, options: GroupOptions, *, train: bool) -> list[Shape]:
    """The distinct (prompt_len, target_len) batch shapes the pipeline makes of `split`,
    ascending: for training, those of the groups that give at least one batch; for
    evaluation, those of its batches in split order. Each is one compilation of a step."""
    if train:
        groups = length_groups(split, options)
        return sorted({g.shape for g in groups if len(g.indices) >= options.batch_size})
    shapes = set()
    for start in range(0, len(split), options.batch_size):
        elements = [split[i] for i in range(start, min(start + options.batch_size, len(split)))]
        shapes.add(batch_shape(elements, options))
    return sorted(shapes)
