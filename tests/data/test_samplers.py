"""Samplers: deterministic per (seed, epoch), the ranks' shares partition each global batch, bad
arguments refused."""
import numpy as np
import pytest

from mlperf_fast.data.samplers import (BucketingSampler, ShuffledBatches, accumulation_steps,
                                       split_micro_batches)


def test_shuffled_batches_partition_and_repeat():
    a = ShuffledBatches(103, 8, seed=3).epoch(0)
    assert len(a) == 12 and all(len(b) == 8 for b in a)
    assert len({i for b in a for i in b}) == 96
    assert a == ShuffledBatches(103, 8, seed=3).epoch(0) != ShuffledBatches(103, 8, 3).epoch(1)
    r0 = ShuffledBatches(103, 8, 3, rank=0, world_size=2).epoch(0)
    r1 = ShuffledBatches(103, 8, 3, rank=1, world_size=2).epoch(0)
    assert [x + y for x, y in zip(r0, r1)] == a


def test_bucketing_refuses_bad_durations():
    for bad in ([1.0, float("nan"), 2.0], [1.0, -1.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="durations"):
            BucketingSampler(bad * 4, 2, 1, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        BucketingSampler(list(np.arange(10.0)), 3, 1, seed=0, world_size=2)
    with pytest.raises(ValueError, match="make no batch"):
        ShuffledBatches(3, 8, seed=0)


def test_micro_batches():
    assert split_micro_batches(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert accumulation_steps(1024, 8, 32) == 4 and accumulation_steps(16, 1, 16) == 1
    with pytest.raises(ValueError, match="micro_batch"):
        split_micro_batches([1], 0)
