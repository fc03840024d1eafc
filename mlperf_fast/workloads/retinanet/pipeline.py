"""RetinaNet's CPU input pipeline: JPEG decoding and the reference's augmentation in PyTorch,
batched with padded ground truth, made ahead of the training loop (data.loader.load_ahead).

The reference's input, as read in mlcommons/training single_stage_detector/ssd at 2deed932:
``presets.py`` ``DetectionPresetTrain('hflip')`` (a left-right flip with probability 0.5 on the
decoded image, then ``ToTensor``: [0, 1] floats; evaluation: ``ToTensor`` only), then inside the
model ``model/transform.py`` ``GeneralizedRCNNTransform``: ``(x - mean) / std`` with ImageNet's
mean and std, and ``F.interpolate(size=(800, 800), mode='bilinear', align_corners=False)`` (no
antialiasing, the aspect not kept), the boxes scaled by ``new / old`` in float32
(``resize_boxes``). Here the resize comes first and the normalization second: both are
per-channel affine maps of the float image, so the result is the same arithmetic. The resize is
the reference's own (``F.interpolate`` without antialiasing), not
data.detection_transforms.resize (which antialiases as Pillow does).

Batches: ``images`` float32 (B, 3, H, W) normalized; ``boxes`` float32 (B, G, 4) XYXY pixels of
the resized image, padded with zeros to the batch's largest count G (at least 1); ``labels``
int64 (B, G), padding 0; ``num_boxes`` int64 (B,). Evaluation batches add each image's id and
original (h, w) and a ``valid`` flag for the rows past the end of the set.

Augmentation is a function of (seed, epoch, image index) alone, so that batches are the same
whatever the number of worker processes or ranks.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlperf_fast.data import detection_transforms as T
from mlperf_fast.data.coco import DetectionDataset
from mlperf_fast.data.loader import WaitClock, WorkerPool, load_ahead
from mlperf_fast.data.samplers import ShuffledBatches


def reference_resize(image: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's resize: a float (3, h, w) image to ``size`` (H, W) by bilinear
    interpolation without antialiasing; (n, 4) boxes times (W / w, H / h) in float32."""
    h, w = image.shape[-2:]
    if (h, w) != tuple(size):
        image = F.interpolate(image[None], size=tuple(size), mode="bilinear",
                              align_corners=False)[0]
    rh = torch.tensor(size[0], dtype=torch.float32) / torch.tensor(h, dtype=torch.float32)
    rw = torch.tensor(size[1], dtype=torch.float32) / torch.tensor(w, dtype=torch.float32)
    return image, boxes * torch.stack((rw, rh, rw, rh)).to(boxes.dtype)


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip_prob: float = 0.5

    @classmethod
    def of(cls, cfg) -> Preprocessing:
        return cls(tuple(cfg.image_size), tuple(cfg.image_mean), tuple(cfg.image_std),
                   cfg.hflip_prob)


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # one stream per (seed, epoch, image): independent of batching and workers
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index)
                                         % (2 ** 63))


def prepare(image: torch.Tensor, boxes: torch.Tensor, prep: Preprocessing,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: uint8 (3, h, w) and (n, 4) boxes -> normalized float32 (3, H, W) and the
    boxes of the resized image. ``generator``: the flip's draw (None: no flip, evaluation)."""
    x = image.float() / 255.0  # [ref] ToTensor
    if generator is not None and prep.hflip_prob > 0 and \
            float(torch.rand((), generator=generator, dtype=torch.float64)) < prep.hflip_prob:
        x, boxes = T.hflip(x, boxes)
    x, boxes = reference_resize(x, boxes, prep.size)
    return T.normalize(x, prep.mean, prep.std), boxes


def pad_targets(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, G, 4) float32 boxes, (B, G) int64 labels (zero padding) and (B,) int64 counts."""
    g = max([1] + [len(b) for b in boxes])
    out_b = torch.zeros(len(boxes), g, 4, dtype=torch.float32)
    out_l = torch.zeros(len(boxes), g, dtype=torch.int64)
    counts = torch.zeros(len(boxes), dtype=torch.int64)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        out_b[i, :len(b)] = b
        out_l[i, :len(b)] = lab
        counts[i] = len(b)
    return out_b, out_l, counts


class _TrainBatch:
    """``(indices, epoch) -> (images, boxes, labels, num_boxes)``."""

    def __init__(self, data: DetectionDataset, prep: Preprocessing, seed: int) -> None:
        self.data, self.prep, self.seed = data, prep, seed

    def __eq__(self, other: object) -> bool:  # WorkerPool: the same batches
        return (isinstance(other, _TrainBatch) and other.data is self.data
                and other.prep == self.prep and other.seed == self.seed)

    def __call__(self, key: tuple[list[int], int]):
        indices, epoch = key
        images, boxes, labels = [], [], []
        for i in indices:
            img = self.data.load_image(i)
            t = self.data.target(i)
            x, b = prepare(img, t["boxes"], self.prep, _generator(self.seed, epoch, i))
            images.append(x)
            boxes.append(b)
            labels.append(t["labels"])
        return (torch.stack(images),) + pad_targets(boxes, labels)


def train_batches(data: DetectionDataset, global_batch: int, seed: int, epoch: int,
                  prep: Preprocessing, rank: int = 0, world_size: int = 1,
                  workers: int | WorkerPool = 0, clock: WaitClock | None = None,
                  depth: int = 2, pin_memory: bool = False, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple]:
    """This rank's slice of each global batch of ``epoch`` (``ShuffledBatches``'s order, the
    remainder dropped as the reference's ``drop_last=True``), batches ``[start, stop)``."""
    batches = ShuffledBatches(len(data), global_batch, seed, rank, world_size).epoch(epoch)
    batches = batches[start:stop]
    it = load_ahead(_TrainBatch(data, prep, seed), [(b, epoch) for b in batches],
                    workers=workers, depth=depth, pin_memory=pin_memory)
    return clock.timed(it) if clock is not None else it


def eval_shards(n: int, batch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's batches of the ``n`` validation images (rank r takes r, r + W, ...), at
    most ``batch`` each; every rank gets the same number of batches."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mine = list(range(rank, n, world_size))
    steps = math.ceil(math.ceil(n / world_size) / batch)
    return [mine[k * batch:(k + 1) * batch] for k in range(steps)]


class _EvalBatch:
    """``indices -> (images, image_ids, original_sizes, valid)``: float32 (batch, 3, H, W),
    int64 (batch,), int64 (batch, 2) (h, w), bool (batch,) (rows past the set: zeros)."""

    def __init__(self, data: DetectionDataset, prep: Preprocessing, batch: int) -> None:
        self.data, self.prep, self.batch = data, prep, batch

    def __call__(self, indices: list[int]):
        h, w = self.prep.size
        images = torch.zeros(self.batch, 3, h, w)
        ids = torch.zeros(self.batch, dtype=torch.int64)
        sizes = torch.ones(self.batch, 2, dtype=torch.int64)
        valid = torch.zeros(self.batch, dtype=torch.bool)
        for j, i in enumerate(indices):
            img = self.data.load_image(i)
            x, _ = prepare(img, torch.zeros(0, 4), self.prep, None)
            im = self.data.coco.images[i]
            images[j], ids[j], valid[j] = x, im.id, True
            sizes[j] = torch.tensor([im.height, im.width])
        return images, ids, sizes, valid


def eval_batches(data: DetectionDataset, batch: int, prep: Preprocessing, rank: int = 0,
                 world_size: int = 1, workers: int | WorkerPool = 0, depth: int = 2
                 ) -> Iterator[tuple]:
    keys = eval_shards(len(data), batch, rank, world_size)
    return load_ahead(_EvalBatch(data, prep, batch), keys, workers=workers, depth=depth)
