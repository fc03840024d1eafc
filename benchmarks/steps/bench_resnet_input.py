"""ResNet-50's CPU input pipeline (workloads/resnet/pipeline.py): JPEG decode, the reference's
random crop and flip, resize to 224 x 224, normalization, batching, in worker processes, as the
training loop consumes it. Images per second on this machine's cores, against what the model
eats: the step benchmark's images/s (bench_resnet_step.py) says how many workers keep one GPU
fed.

Images: 512 JPEGs of ImageNet's typical size (500 x 375, quality 90, drawn by the embedded data
set's generator), in the ImageFolder layout, each listed 8 times (hard links: 4,096 entries, every
one decoded and augmented afresh; the files are in the page cache, as a local copy of ImageNet
mostly is). Rows: the thread path (workers=0) and worker processes (2, 4, 8 and every core but
two, those that exist), the workers kept across epochs (data.loader.WorkerPool, as the training
loop keeps them). One timed call = one whole epoch (32 batches of 128), so that the queue's
filling and draining are inside the time: images/s = 4,096 / the median (printed).

On any machine: ``python3 benchmarks/steps/bench_resnet_input.py`` prints images/s per worker
count (no GPU needed).
"""
from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time

import numpy as np
import pytest

from mlperf_fast.data.loader import WorkerPool, default_workers
from mlperf_fast.workloads.resnet import synth
from mlperf_fast.workloads.resnet.data import open_split
from mlperf_fast.workloads.resnet.pipeline import train_batches

N, W, H, BATCH, REPEAT = 512, 500, 375, 128, 8


def imagenet_like(root: str) -> str:
    """``root``/train and /val with N/2 JPEGs in each of two classes (val: a few)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", N // 2), ("val", 2)):
        for label in range(2):
            folder = os.path.join(root, split, synth.wnid(label))
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = synth.draw(synth.SHAPES[label], rng, W, H)
                path = os.path.join(folder, f"{i:05d}.JPEG")
                with open(path, "wb") as f:
                    f.write(synth.encode_jpeg(pixels, 90))
                if split == "train":
                    for k in range(1, REPEAT):
                        os.link(path, os.path.join(folder, f"{i:05d}_{k}.JPEG"))
    return root


def epochs(images, workers: int, stop: int | None = None):
    """A function that runs one epoch (its first ``stop`` batches, if given) and returns its
    image count: on a thread, or in a pool of ``workers`` processes kept from epoch to epoch."""
    pool = WorkerPool(workers, depth=2) if workers else 0
    count = itertools.count()

    def one_epoch() -> int:
        n = 0
        for x, _ in train_batches(images, BATCH, 1, next(count), size=224, workers=pool,
                                  stop=stop):
            n += x.shape[0]
        return n

    return one_epoch


def worker_counts() -> list[int]:
    most = default_workers(reserved=2, cap=64)
    return sorted({0, *[w for w in (2, 4, 8) if w <= most], most})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return open_split(imagenet_like(str(tmp_path_factory.mktemp("imagenet_like"))), "train",
                      log=lambda m: None)


@pytest.mark.cuda
@pytest.mark.parametrize("workers", worker_counts())
def test_resnet_input_pipeline(measure, images, workers):
    # few workers: a quarter of the epoch per call (pytest-benchmark adds 6 calls to ours)
    run = epochs(images, workers, stop=None if workers > 2 else 8)
    n = run()  # the first epoch forks the workers
    group = "ResNet-50 CPU input pipeline, whole epochs of 128-image batches at 224 px"
    row = measure(group, f"PyTorch pipeline, {workers or 'no'} worker processes, {n} images "
                  "per call", run, shape=f"{W}x{H} JPEG -> 224x224, {os.cpu_count()} cores",
                  warmup=0, repeat=3, min_time_s=0.0)
    print(f"workers={workers}: {n / (row.median_ms / 1e3):.0f} images/s")


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        images = open_split(imagenet_like(root), "train", log=lambda m: None)
        for workers in worker_counts():
            run = epochs(images, workers)
            run()
            t = time.perf_counter()
            n = run()
            print(f"workers={workers}: {n / (time.perf_counter() - t):.0f} images/s "
                  f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
