"""SSD's input pipeline (PyTorch, worker processes): the reference's training transforms and the
default-box matching in the workers, so that the training process receives finished targets.

Training, per image (reference utils.py ``SSDTransformer``, in its order): the IoU-constrained
SSD crop, a horizontal flip with probability 0.5, the resize to ``image_size`` x ``image_size``,
the colour jitter (brightness 0.125, contrast 0.5, saturation 0.5, hue 0.05), the ImageNet
normalization; then the matching and encoding (boxes.encode) against the default boxes in
model.py's order. Every random draw comes from a generator seeded by (seed, epoch, image), so a
batch is a function of those alone: the same after a resume, on any number of workers.

Evaluation: the resize and the normalization, with each image's id and original size, so that
detections go back to the stored image's pixels.

Labels: the data set's contiguous 0..C-1 become 1..C (0 is SSD's background).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mlperf_fast.data.coco import CocoSet, DetectionDataset
from mlperf_fast.data.loader import load_ahead
from mlperf_fast.data.samplers import ShuffledBatches
from mlperf_fast.workloads.ssd.boxes import DefaultBoxes, encode
from mlperf_fast.workloads.ssd.config import SSDConfig


def _transforms():
    from mlperf_fast.data import detection_transforms

    return detection_transforms


@dataclass
class TrainTransform:
    """One training image: (uint8 (3, H, W), target) -> (float32 (3, S, S) normalized,
    loc (A, 4) float32, labels (A,) int64), given a torch.Generator."""

    cfg: SSDConfig
    dboxes: DefaultBoxes

    def __call__(self, image: torch.Tensor, target: dict,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T = _transforms()
        cfg, s = self.cfg, self.cfg.image_size
        boxes = target["boxes"].to(torch.float32)
        labels = target["labels"].to(torch.int64) + 1
        if boxes.shape[0]:
            image, boxes, labels = T.ssd_random_crop(image, boxes, labels, generator,
                                                     attempts=cfg.crop_iterations)
        if float(torch.rand((), generator=generator)) < 0.5:
            image, boxes = T.hflip(image, boxes)
        image, boxes = T.resize(image, boxes, (s, s))
        image = T.color_jitter(image, generator, brightness=cfg.brightness,
                               contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue)
        x = T.normalize(image, cfg.mean, cfg.std)
        loc, lab = encode(boxes / s, labels, self.dboxes, cfg.match_iou)
        return x, loc, lab


@dataclass
class EvalTransform:
    """One evaluation image -> float32 (3, S, S) normalized."""

    cfg: SSDConfig

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        T = _transforms()
        s = self.cfg.image_size
        image, _ = T.resize(image, torch.zeros(0, 4), (s, s))
        return T.normalize(image, self.cfg.mean, self.cfg.std)


class _TrainBatch:
    """make_batch for load_ahead: (epoch, indices) -> the stacked batch (picklable)."""

    def __init__(self, coco: CocoSet, cfg: SSDConfig, dboxes: DefaultBoxes, seed: int) -> None:
        self.data = DetectionDataset(coco)
        self.transform = TrainTransform(cfg, dboxes)
        self.seed = seed

    def __call__(self, key: tuple[int, Sequence[int]]):
        epoch, indices = key
        xs, locs, labs = [], [], []
        for i in indices:
            g = torch.Generator().manual_seed(_generator_seed(self.seed, epoch, int(i)))
            x, loc, lab = self.transform(self.data.load_image(i), self.data.target(i), g)
            xs.append(x)
            locs.append(loc)
            labs.append(lab)
        return torch.stack(xs), torch.stack(locs), torch.stack(labs)


def _generator_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's draws in one epoch (numpy's SeedSequence mixing)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def train_batches(coco: CocoSet, cfg: SSDConfig, dboxes: DefaultBoxes, seed: int, epoch: int,
                  rank: int = 0, world_size: int = 1, workers: int = 0,
                  pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
    """This rank's training batches of ``epoch``: (images (b, 3, S, S) float32, loc (b, A, 4)
    float32, labels (b, A) int64), b = global batch / world size, a fresh shuffle per epoch
    (the remainder dropped)."""
    sampler = ShuffledBatches(len(coco), cfg.global_batch_size, seed, rank, world_size)
    keys = [(epoch, b) for b in sampler.epoch(epoch)]
    yield from load_ahead(_TrainBatch(coco, cfg, dboxes, seed), keys, workers=workers,
                          pin_memory=pin_memory)


class _EvalBatch:
    def __init__(self, coco: CocoSet, cfg: SSDConfig) -> None:
        self.data = DetectionDataset(coco)
        self.transform = EvalTransform(cfg)

    def __call__(self, indices: Sequence[int]):
        xs = [self.transform(self.data.load_image(i)) for i in indices]
        sizes = torch.tensor([[self.data.coco.images[i].height, self.data.coco.images[i].width]
                              for i in indices], dtype=torch.float32)
        return torch.stack(xs), torch.tensor(list(indices), dtype=torch.int64), sizes


def eval_batches(coco: CocoSet, cfg: SSDConfig, rank: int = 0, world_size: int = 1,
                 workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's share of the evaluation images (every world_size-th, from rank), in batches
    of ``eval_batch_size``: (images (b, 3, S, S), indices into ``coco`` (b,), (H, W) of each
    stored image (b, 2) float32)."""
    mine = list(range(rank, len(coco), world_size))
    bs = cfg.eval_batch_size
    keys = [mine[i:i + bs] for i in range(0, len(mine), bs)]
    yield from load_ahead(_EvalBatch(coco, cfg), keys, workers=workers)
