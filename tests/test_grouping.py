import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from kid.data import grouping


@dataclasses.dataclass(frozen=True)
class _Options:
    batch_size: int = 2
    prompt_buckets: tuple[int, ...] = (4, 8)
    target_buckets: tuple[int, ...] = (2, 4)
    group_by_length: bool = True
    min_group_batches: int = 1


@dataclasses.dataclass(frozen=True)
class _Split:
    """Examples of the given prompt and target lengths (what grouping reads of a split)."""

    prompt_lens: tuple[int, ...]
    target_lens: tuple[int, ...]

    @property
    def prompts(self):
        return [np.ones(n, np.int32) for n in self.prompt_lens]

    @property
    def targets(self):
        return [np.ones(n, np.int32) for n in self.target_lens]

    def __len__(self):
        return len(self.prompt_lens)

    def __getitem__(self, i):
        return {"prompt": self.prompts[i], "target": self.targets[i], "index": i}


# Natural shapes (4, 2) x 3, (8, 4), (8, 2), (4, 4): the last three join (8, 4).
SPLIT = _Split((3, 3, 3, 7, 7, 2), (1, 2, 1, 3, 1, 4))


def test_small_groups_join_the_cheapest_shape_that_holds_them():
    sizes = {(128, 32): 20, (128, 64): 3, (256, 32): 2, (256, 64): 9, (512, 128): 1}
    final = grouping.merge_small_groups(sizes, min_size=8)
    # (128, 64) and (256, 32) fit (256, 64); (512, 128) holds nobody and nothing holds it:
    # it joins the group whose common shape pads least, here (256, 64) -> (512, 128).
    assert final == {
        (128, 32): (128, 32),
        (128, 64): (512, 128),
        (256, 32): (512, 128),
        (256, 64): (512, 128),
        (512, 128): (512, 128),
    }
    assert grouping.merge_small_groups({(128, 32): 3}, min_size=8) == {(128, 32): (128, 32)}
    two = grouping.merge_small_groups({(128, 64): 3, (256, 32): 10}, min_size=8)
    assert two == {(128, 64): (256, 64), (256, 32): (256, 64)}


def test_length_groups_by_bucket_pair_small_ones_merged():
    groups = grouping.length_groups(SPLIT, _Options())
    assert [(g.shape, g.indices.tolist()) for g in groups] == [
        ((4, 2), [0, 1, 2]),
        ((8, 4), [3, 4, 5]),
    ]
    assert all(g.indices.dtype == np.int64 for g in groups)
    (merged,) = grouping.length_groups(SPLIT, _Options(min_group_batches=2))
    assert merged.shape == (8, 4) and merged.indices.tolist() == list(range(6))
    for options, by_length in ((_Options(group_by_length=False), None), (_Options(), False)):
        (single,) = grouping.length_groups(SPLIT, options, by_length=by_length)
        assert single.shape == (8, 4) and single.indices.tolist() == list(range(6))
    assert grouping.length_groups(_Split((), ()), _Options()) == []


def test_split_shapes():
    assert grouping.split_shapes(SPLIT, _Options(), train=True) == [(4, 2), (8, 4)]
    # Evaluation batches in split order: [0, 1] -> (4, 2), [2, 3] and [4, 5] -> (8, 4).
    assert grouping.split_shapes(SPLIT, _Options(), train=False) == [(4, 2), (8, 4)]
    assert grouping.split_shapes(SPLIT, _Options(batch_size=3), train=False) == [(4, 2), (8, 4)]
    assert grouping.split_shapes(SPLIT, _Options(batch_size=6), train=False) == [(8, 4)]
    # A lone group smaller than a batch gives no training batch, so no shape.
    assert grouping.split_shapes(_Split((3,), (1,)), _Options(), train=True) == []


def test_batch_shape_holds_the_longest_prompt_and_target():
    empty = np.zeros(0, np.int32)
    elements = [SPLIT[0], SPLIT[3], {"prompt": empty, "target": empty, "index": -1}]
    assert grouping.batch_shape(elements, _Options()) == (8, 4)
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        grouping.batch_shape([{"prompt": np.ones(9), "target": empty}], _Options())


def test_grouping_does_not_import_grain():
    code = "import sys, kid.data.grouping; assert 'grain' not in sys.modules, 'grain imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
