"""Input loading ahead of the loop: the same batches, in order, on a thread or in worker
processes; the waiting time measured."""
import time

import torch

from mlperf_fast.data.loader import WaitClock, load_ahead


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
