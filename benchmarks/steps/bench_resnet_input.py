"""ResNet-50's CPU input pipeline (workloads/resnet/pipeline.py): JPEG decode, the reference's
random crop and flip, resize to 224 x 224, normalization, batching, in worker processes, as the
training loop consumes it. Images per second on this machine's cores, against what the model
eats: the step benchmark's images/s (bench_resnet_step.py) says how many workers keep one GPU
fed.

Images: 512 JPEGs of ImageNet's typical size (500 x 375, quality 90, drawn by the embedded data
set's generator), in the ImageFolder layout. Rows: the thread path (workers=0) and worker
processes (2, 4, 8 and every core but two, those that exist). One timed call = one batch of 128.

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

from mlperf_fast.data.loader import default_workers
from mlperf_fast.workloads.resnet import synth
from mlperf_fast.workloads.resnet.data import open_split
from mlperf_fast.workloads.resnet.pipeline import train_batches

N, W, H, BATCH = 512, 500, 375, 128


def imagenet_like(root: str) -> str:
    """``root``/train and /val with N/2 JPEGs in each of two classes (val: a few)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", N // 2), ("val", 2)):
        for label in range(2):
            folder = os.path.join(root, split, synth.wnid(label))
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = synth.draw(synth.SHAPES[label], rng, W, H)
                with open(os.path.join(folder, f"{i:05d}.JPEG"), "wb") as f:
                    f.write(synth.encode_jpeg(pixels, 90))
    return root


def endless(images, workers: int):
    """Batches of every epoch, one after the other."""
    return itertools.chain.from_iterable(
        train_batches(images, BATCH, 1, e, size=224, workers=workers, depth=max(2, workers))
        for e in itertools.count())


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
    it = endless(images, workers)
    group = "ResNet-50 CPU input pipeline, batches of 128 at 224 px"
    measure(group, f"PyTorch pipeline, {workers or 'no'} worker processes", lambda: next(it),
            shape=f"{W}x{H} JPEG -> 224x224, {os.cpu_count()} cores", warmup=3, repeat=10)


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        images = open_split(imagenet_like(root), "train", log=lambda m: None)
        for workers in worker_counts():
            it = endless(images, workers)
            for _ in range(2):
                next(it)
            t = time.perf_counter()
            steps = 6
            for _ in range(steps):
                next(it)
            rate = steps * BATCH / (time.perf_counter() - t)
            print(f"workers={workers}: {rate:.0f} images/s ({os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
