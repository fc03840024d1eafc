"""ResNet's CPU input pipeline: JPEG decoding and the reference's augmentation in PyTorch, in
worker processes (data.loader.load_ahead), yielding NCHW float32 normalized images and int64
labels (the model converts them to channels-last and bf16 itself).

The reference's preprocessing, as read in mlcommons/training
image_classification/tensorflow2/imagenet_preprocessing.py (the v2.1 reference, commit 48c266b):

- training (``_decode_crop_and_flip``, :383-440; ``preprocess_image``, :593-596): a crop drawn
  by ``tf.image.sample_distorted_bounding_box`` with ``min_object_covered=0.1``,
  ``aspect_ratio_range=[0.75, 1.33]``, ``area_range=[0.05, 1.0]``, ``max_attempts=100``,
  ``use_image_if_no_bounding_boxes=True`` (:411-418), against the record's object boxes
  (:212-236); a left-right flip with probability 0.5 (``random_flip_left_right``, :439); a
  resize of the crop to 224 x 224 without keeping its aspect (``_resize_image``, bilinear,
  :551-568);
- evaluation (:598-604): an aspect-preserving resize of the shorter side to 256
  (``_RESIZE_MIN``, :67; the new sides ``int(side * 256 / shorter)`` in float32, :520-527) and
  the central 224 x 224 crop, offsets ``(side - 224) // 2`` (``_central_crop``, :443-462): the
  crop keeps 224 / 256 = 0.875 of the shorter side;
- both: the per-channel mean ``[123.68, 116.78, 103.94]`` (RGB, :59-62) subtracted from the 0-255
  pixels (``_mean_image_subtraction``, :465-498), no division by a deviation.

The crop sampler is TensorFlow's (tensorflow/core/kernels/image/sample_distorted_bounding_box_op.
cc, ``GenerateRandomCrop`` and ``SatisfiesOverlapConstraints``), re-implemented here: per attempt
an aspect ratio ``r`` (width / height) uniform in the range; the height uniform over the whole
numbers from ``round(sqrt(min_area / r))`` to ``round(sqrt(max_area / r))`` (capped so the crop
fits; so the area is not uniform but leans towards large crops), the width ``round(h * r)``;
rejected if outside the area range, or if it covers less than ``min_object_covered`` of every
box (no boxes: the whole image is the box, so with ImageFolder data, which has none, the crop
keeps at least 10% of the image, not 5%); the offsets uniform in ``[0, side - crop)``. After 100
rejected attempts the crop is the **whole image** (TensorFlow's fallback; torchvision and DALI
fall back to a centre crop instead).

What closed submissions do instead (NVIDIA's MXNet/DALI ResNet, mlcommons/training_results_v2.1
NVIDIA/benchmarks/resnet/implementations/mxnet-22.04): DALI's random-resized crop with
``--min-random-area 0.05 --max-random-area 1.0`` (run_and_time.sh:129-130) and aspect
``[3/4, 4/3]`` (common/dali.py:48-51), coin-flip mirroring with p = 0.5 (dali.py:200, 209),
evaluation resized to a shorter side of 256 (train_imagenet.py:131; dali.py:265) and centre-
cropped to 224 (dali.py:272), and the ImageNet mean and deviation ``255 * (0.485, 0.456, 0.406)``
and ``255 * (0.229, 0.224, 0.225)`` (dali.py:86-87). ``Preprocessing`` holds all of these
choices; its defaults are the reference's, and ``NVIDIA_MEAN`` / ``NVIDIA_STD`` are there for
the other.

Resizing: bilinear with antialiasing (torchvision), as DALI resizes; the reference's TF1
``resize_bilinear`` (no antialiasing, corner-aligned pixel centres) is not reproduced. Images are
decoded to RGB (grey and CMYK JPEGs converted, ImageNet has a few; PNG bytes too: one ImageNet
training "JPEG" is a PNG). For an output size other than 224 the evaluation resize keeps the
reference's ratio: the shorter side becomes ``round(size * 256 / 224)``.

Augmentation is a function of (seed, epoch, image index) alone, so batches are the same whatever
the number of worker processes or ranks.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlperf_fast.data.loader import WaitClock, WorkerPool, load_ahead
from mlperf_fast.data.samplers import ShuffledBatches, split_micro_batches
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.resnet.data import ImageSet

REFERENCE_MEAN = (123.68, 116.78, 103.94)  # imagenet_preprocessing.py:59-62 (RGB)
REFERENCE_STD = (1.0, 1.0, 1.0)  # the reference only subtracts the mean
NVIDIA_MEAN = tuple(255 * x for x in (0.485, 0.456, 0.406))  # NVIDIA's dali.py:86
NVIDIA_STD = tuple(255 * x for x in (0.229, 0.224, 0.225))  # NVIDIA's dali.py:87


@dataclass(frozen=True)
class Preprocessing:
    """The augmentation and normalization (defaults: the reference's, see the module docstring).
    ``crop_fraction``: the evaluation crop over the shorter side after resizing (224 / 256);
    ``use_boxes``: honour the records' object boxes in the training crop (TFRecord data)."""

    area_range: tuple[float, float] = (0.05, 1.0)
    aspect_range: tuple[float, float] = (0.75, 1.33)
    min_object_covered: float = 0.1
    max_attempts: int = 100
    flip_p: float = 0.5
    crop_fraction: float = 224 / 256
    mean: tuple[float, float, float] = REFERENCE_MEAN
    std: tuple[float, float, float] = REFERENCE_STD
    use_boxes: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.area_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"area_range must satisfy 0 < lo <= hi <= 1, got {self.area_range}")
        lo, hi = self.aspect_range
        if not 0 < lo <= hi:
            raise ValueError(f"aspect_range must satisfy 0 < lo <= hi, got {self.aspect_range}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 <= self.flip_p <= 1:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must be 3 values each, std > 0")

    def eval_resize(self, size: int) -> int:
        """The shorter side before the evaluation crop (256 for 224)."""
        return round(size / self.crop_fraction)


REFERENCE = Preprocessing()


# -- one image ------------------------------------------------------------------------------------
def _decode_pil(data: bytes) -> torch.Tensor:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode(data: bytes, where: str = "image") -> torch.Tensor:
    """RGB pixels of encoded image bytes: uint8 [3, H, W]. DataError naming ``where`` if they do
    not decode.

    torchvision's decoder first (libjpeg-turbo; 0.86 ms for a 500 x 375 JPEG on one core, against
    Pillow's 1.14 ms for the same pixels); Pillow for what it refuses, and for a torchvision
    without it (0.29 deprecates its image decoding in favour of TorchCodec)."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        decode_image = None
    first: Exception | None = None
    if decode_image is not None:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                mode=ImageReadMode.RGB)
        except RuntimeError as e:
            first = e
    try:
        return _decode_pil(data)
    except Exception as e:  # any failure of Pillow's means the bytes are not an image
        raise DataError(f"{where} does not decode as an image "
                        f"({f'{first}; Pillow: ' if first else ''}{e})") from e


def sample_crop(height: int, width: int, rng: np.random.Generator,
                boxes: np.ndarray | None = None, prep: Preprocessing = REFERENCE,
                ) -> tuple[int, int, int, int]:
    """TensorFlow's ``sample_distorted_bounding_box`` (see the module docstring) for an image of
    ``height`` x ``width``: the crop's (top, left, crop height, crop width). ``boxes``: float
    [K, 4] (ymin, xmin, ymax, xmax) in [0, 1]; none: the whole image is the object."""
    if height < 1 or width < 1:
        raise ValueError(f"image of {height} x {width} pixels")
    if boxes is not None and len(boxes):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        objects = np.stack([(b[:, 1] * width).astype(np.int64), (b[:, 0] * height).astype(np.int64),
                            (b[:, 3] * width).astype(np.int64), (b[:, 2] * height).astype(np.int64)],
                           axis=1)  # x0, y0, x1, y1 in pixels, truncated as TF does
    else:
        objects = np.array([[0, 0, width, height]], dtype=np.int64)
    obj_area = (objects[:, 2] - objects[:, 0]) * (objects[:, 3] - objects[:, 1])
    min_area = prep.area_range[0] * width * height
    max_area = prep.area_range[1] * width * height
    lo, hi = prep.aspect_range
    for _ in range(prep.max_attempts):
        ratio = rng.random() * (hi - lo) + lo
        h = round(math.sqrt(min_area / ratio))
        max_h = round(math.sqrt(max_area / ratio))
        if round(max_h * ratio) > width:  # the tallest crop whose width still fits
            max_h = int((width + 0.5 - 1e-7) / ratio)
            if round(max_h * ratio) > width:
                max_h -= 1
        max_h = min(max_h, height)
        h = min(h, max_h)
        if h < max_h:
            h += int(rng.integers(0, max_h - h + 1))
        w = round(h * ratio)
        if w * h < min_area:  # rounding: one pixel taller first, then one shorter
            h += 1
            w = round(h * ratio)
        if w * h > max_area:
            h -= 1
            w = round(h * ratio)
        if w * h < min_area or w * h > max_area or not (0 < w <= width and 0 < h <= height):
            continue
        top = int(rng.integers(0, height - h)) if h < height else 0
        left = int(rng.integers(0, width - w)) if w < width else 0
        # covers enough of one object (of at least a pixel)?
        ix = np.minimum(objects[:, 2], left + w) - np.maximum(objects[:, 0], left)
        iy = np.minimum(objects[:, 3], top + h) - np.maximum(objects[:, 1], top)
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        ok = (obj_area >= 1) & (inter >= prep.min_object_covered * np.maximum(obj_area, 1))
        if ok.any():
            return top, left, h, w
    return 0, 0, height, width


def _normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(3, 1, 1)
    return (x.float() - mean) / std


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if x.shape[-2:] == (height, width):
        return x
    return F.resize(x, [height, width], interpolation=F.InterpolationMode.BILINEAR,
                    antialias=True)


def train_window(height: int, width: int, rng: np.random.Generator,
                 boxes: np.ndarray | None = None, prep: Preprocessing = REFERENCE,
                 ) -> tuple[int, int, int, int, bool]:
    """The training view's geometry for an image of ``height`` x ``width``: the crop's (top,
    left, crop height, crop width) and whether it is flipped, in the order they are drawn from
    ``rng``. The DALI pipeline draws its windows here too, so both paths crop alike."""
    top, left, h, w = sample_crop(height, width, rng, boxes if prep.use_boxes else None, prep)
    return top, left, h, w, bool(rng.random() < prep.flip_p)


def train_image(pixels: torch.Tensor, size: int, rng: np.random.Generator,
                boxes: np.ndarray | None = None, prep: Preprocessing = REFERENCE,
                ) -> torch.Tensor:
    """The training view of uint8 [3, H, W] pixels: crop, flip, resize to ``size`` x ``size``,
    normalize. float32 [3, size, size]."""
    top, left, h, w, flip = train_window(pixels.shape[1], pixels.shape[2], rng, boxes, prep)
    x = pixels[:, top:top + h, left:left + w]
    if flip:
        x = x.flip(-1)
    return _normalize(_resize(x, size, size), prep)


def eval_window(height: int, width: int, size: int, prep: Preprocessing = REFERENCE,
                ) -> tuple[int, int, int, int]:
    """The evaluation view's geometry for an image of ``height`` x ``width``: the resized
    (height, width) and the central crop's (top, left)."""
    short = np.float32(prep.eval_resize(size))
    scale = short / np.float32(min(height, width))  # the reference's arithmetic, in float32
    nh = max(int(np.float32(height) * scale), size)
    nw = max(int(np.float32(width) * scale), size)
    return nh, nw, (nh - size) // 2, (nw - size) // 2


def eval_image(pixels: torch.Tensor, size: int, prep: Preprocessing = REFERENCE) -> torch.Tensor:
    """The evaluation view of uint8 [3, H, W] pixels: the shorter side resized to
    ``prep.eval_resize(size)``, the central ``size`` x ``size`` crop, normalized. float32
    [3, size, size]."""
    nh, nw, top, left = eval_window(pixels.shape[1], pixels.shape[2], size, prep)
    x = _resize(pixels, nh, nw)
    return _normalize(x[:, top:top + size, left:left + size], prep)


def augment_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of image ``index``'s training view in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


# -- batches --------------------------------------------------------------------------------------
def _check(size: int, workers: int | WorkerPool) -> None:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not isinstance(workers, WorkerPool) and workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")


class _TrainBatch:
    """``(indices, epoch) -> (images float32 [B, 3, S, S], labels int64 [B])``."""

    def __init__(self, images: ImageSet, size: int, seed: int, prep: Preprocessing) -> None:
        self.images, self.size, self.seed, self.prep = images, size, seed, prep

    def __eq__(self, other: object) -> bool:  # the same batches (data.loader.WorkerPool)
        return (type(other) is type(self) and other.images is self.images
                and (other.size, other.seed, other.prep) == (self.size, self.seed, self.prep))

    __hash__ = object.__hash__

    def __call__(self, key: tuple[Sequence[int], int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices, epoch = key
        s, images = self.size, self.images
        out = torch.empty((len(indices), 3, s, s), dtype=torch.float32)
        for row, i in enumerate(indices):
            pixels = decode(images.load(i), images.describe(i))
            out[row] = train_image(pixels, s, augment_rng(self.seed, epoch, i),
                                   images.boxes(i), self.prep)
        return out, torch.from_numpy(images.labels[list(indices)].astype(np.int64))


def train_batches(images: ImageSet, global_batch: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, size: int = 224, workers: int | WorkerPool = 0,
                  prep: Preprocessing = REFERENCE, micro_batch: int | None = None,
                  start: int = 0, stop: int | None = None, clock: WaitClock | None = None,
                  depth: int = 2, pin_memory: bool = False,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's slice of each global batch of ``epoch``: ``(images, labels)``, float32
    [global_batch / world_size, 3, size, size] and int64 [global_batch / world_size].

    The order is ``ShuffledBatches(len(images), global_batch, seed)``'s for ``epoch`` (the
    remainder dropped, as the reference's ``drop_remainder``), batches ``[start, stop)`` of it.
    ``micro_batch``: yield each slice in pieces of at most that many images (accumulation).
    Batches are made ``depth`` ahead on a thread (``workers == 0``) or in ``workers`` processes;
    ``clock`` (a WaitClock) adds up the time the consumer waited for them.
    """
    _check(size, workers)
    batches = ShuffledBatches(len(images), global_batch, seed, rank, world_size).epoch(epoch)
    batches = batches[start:stop]
    if micro_batch is not None:
        batches = [m for b in batches for m in split_micro_batches(b, micro_batch)]
    keys = [(b, epoch) for b in batches]
    it = load_ahead(_TrainBatch(images, size, seed, prep), keys, workers=workers, depth=depth,
                    pin_memory=pin_memory)
    return clock.timed(it) if clock is not None else it


def eval_shards(n: int, batch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's batches of the ``n`` validation images (rank ``r`` takes images r, r + W,
    ...), at most ``batch`` each; every rank gets the same number of batches (some possibly
    empty), so that all of them run the same number of steps."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world_size {world_size}")
    mine = list(range(rank, n, world_size))
    steps = math.ceil(math.ceil(n / world_size) / batch)
    return [mine[k * batch:(k + 1) * batch] for k in range(steps)]


class _EvalBatch:
    """``indices -> (images float32 [batch, 3, S, S], labels int64 [batch], valid bool
    [batch])``, padded with zero images (label 0, not valid) to ``batch`` rows."""

    def __init__(self, images: ImageSet, size: int, batch: int, prep: Preprocessing) -> None:
        self.images, self.size, self.batch, self.prep = images, size, batch, prep

    def __eq__(self, other: object) -> bool:  # the same batches (data.loader.WorkerPool)
        return (type(other) is type(self) and other.images is self.images
                and (other.size, other.batch, other.prep) == (self.size, self.batch, self.prep))

    __hash__ = object.__hash__

    def __call__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, images, n = self.size, self.images, len(indices)
        out = torch.zeros((self.batch, 3, s, s), dtype=torch.float32)
        labels = torch.zeros(self.batch, dtype=torch.int64)
        for row, i in enumerate(indices):
            out[row] = eval_image(decode(images.load(i), images.describe(i)), s, self.prep)
        labels[:n] = torch.from_numpy(images.labels[list(indices)].astype(np.int64))
        valid = torch.arange(self.batch) < n
        return out, labels, valid


def eval_batches(images: ImageSet, batch: int, rank: int = 0, world_size: int = 1,
                 size: int = 224, workers: int | WorkerPool = 0,
                 prep: Preprocessing = REFERENCE, clock: WaitClock | None = None, depth: int = 2, pin_memory: bool = False,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's share of the validation images (``eval_shards``) as ``(images, labels,
    valid)``: float32 [batch, 3, size, size], int64 [batch], bool [batch]; rows past the last
    image are zeros, label 0, ``valid`` False. Across the ranks every image comes once."""
    _check(size, workers)
    keys = eval_shards(len(images), batch, rank, world_size)
    it = load_ahead(_EvalBatch(images, size, batch, prep), keys, workers=workers, depth=depth,
                    pin_memory=pin_memory)
    return clock.timed(it) if clock is not None else it
