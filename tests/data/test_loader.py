"""Input loading ahead of the loop: the same batches, in order, on a thread, in worker
processes or in a pool of workers kept across calls; the waiting time measured."""
import os
import time

import pytest
import torch

from mlperf_fast.data.loader import WaitClock, WorkerPool, load_ahead


def _batch(key):
    indices, seed = key
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(indices, dtype=torch.float32) + torch.rand(len(indices), generator=g)


def test_same_batches_on_a_thread_and_in_workers():
    keys = [([i, i + 1, i + 2], 100 + i) for i in range(9)]
    on_thread = list(load_ahead(_batch, keys, workers=0))
    in_workers = list(load_ahead(_batch, keys, workers=2))
    assert len(on_thread) == len(in_workers) == 9
    for a, b in zip(on_thread, in_workers):
        assert torch.equal(a, b)
    assert list(load_ahead(_batch, [], workers=2)) == []


def _slow(key):
    time.sleep(0.05)
    return key


def test_wait_clock_counts_blocked_time():
    clock = WaitClock()
    assert list(clock.timed(load_ahead(_slow, list(range(4)), workers=0, depth=1))) == [0, 1, 2, 3]
    assert clock.waited >= 0.1


class _Offset:
    """A batch function that compares equal when it computes the same batches."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, key):
        return (key + self.offset, os.getpid())

    def __eq__(self, other):
        return isinstance(other, _Offset) and other.offset == self.offset

    __hash__ = object.__hash__


def test_worker_pool_keeps_its_processes_across_calls():
    pool = WorkerPool(2)
    try:
        first = list(load_ahead(_Offset(10), list(range(7)), workers=pool))
        assert [v for v, _ in first] == list(range(10, 17))
        # an equal function (a new object, as each epoch makes): the same processes
        again = list(load_ahead(_Offset(10), [5, 3, 1], workers=pool))
        assert [v for v, _ in again] == [15, 13, 11]
        assert {p for _, p in again} <= {p for _, p in first} and pool.forks == 1
        # abandoned half-way (a dry run's break), then used again
        it = load_ahead(_Offset(10), list(range(20)), workers=pool)
        assert next(it)[0] == 10
        del it
        assert [v for v, _ in pool.run(_Offset(10), [2, 4])] == [12, 14]
        assert list(pool.run(_Offset(10), [])) == []
        # another function: new workers
        other = list(pool.run(_Offset(100), [1, 2]))
        assert [v for v, _ in other] == [101, 102] and pool.forks == 2
        assert not {p for _, p in other} & {p for _, p in first}
    finally:
        pool.close()
    with pytest.raises(ValueError, match="workers >= 1"):
        WorkerPool(0)
