"""ResNet's GPU input pipeline: NVIDIA DALI decoding, resizing and normalizing the same views as
the CPU path (pipeline.py), with the same contract as its ``train_batches`` / ``eval_batches``:
normalized images [B, 3, S, S] (float32, or bfloat16 when asked) and int64 labels as torch
tensors on the pipeline's device, and for evaluation ``valid`` too.

How the views are kept the same:

- **training**: every image's crop window and flip are drawn on the host by
  ``pipeline.train_window`` (TensorFlow's crop sampler) from ``augment_rng(seed, epoch, index)``
  and the image's height and width, read from its header (the JPEG SOF marker; Pillow's lazy
  open for other formats) once per image. DALI gets them through external sources, decodes only
  that region (``decoders.image_slice``: region-of-interest decoding), resizes it to S x S
  (linear, antialiased, as torchvision's) and mirrors, subtracts the mean, divides by the
  deviation and lays out in one ``crop_mirror_normalize``. The windows, flips and labels are the
  CPU path's by construction, so is the augmentation distribution.
- **evaluation**: ``pipeline.eval_window``'s resized size and central crop, from the header;
  DALI decodes the whole image, resizes it to that size, slices the crop and normalizes. The
  sharding is ``pipeline.eval_shards``'s; rows past a rank's last image are zeros, label 0,
  ``valid`` False.

What differs numerically from the CPU path, measured with DALI's CPU operators against
pipeline.py in 0-255 units (the reference divides by 1): three photographs (512 x 600 and
640 x 427) in eight encodings each (as stored, baseline 4:2:0, 4:2:2 and 4:4:4, progressive,
grey, CMYK, PNG) at 224 px, training views over four epochs; and 600 embedded JPEGs (64-96 px)
at 64 and 224 px:

- **decoding**: DALI's CPU decoder is libjpeg-turbo with its accurate integer IDCT and fancy
  chroma upsampling, as torchvision's: identical pixels, for whole images and for decoded
  regions alike (0 of 25M values differed, every encoding above). On the GPU nvJPEG (or the
  A100/H100/H200 hardware decoder) has its own IDCT and colour conversion;
  ``jpeg_fancy_upsampling=True`` asks it for libjpeg's chroma upsampling. Not measured here (no
  GPU): the cuda-marked test bounds it (mean under 1 level) and prints what it sees.
- **resizing**: both sample bilinearly with half-pixel centres and, when shrinking, a triangle
  filter as wide as the scale. Inside the image they differ by the rounding to uint8 alone (at
  most 1 level; 12-20% of values by 1). At the outermost row and column of a shrunk image they
  differ more, because torchvision renormalizes the filter where it runs off the image and DALI
  repeats the edge pixel instead. Evaluation crops lie inside the resized image, so they see
  rounding only; training views are resized crops, so their border rows see both.
  Photographs: evaluation mean 0.15, max 1; training mean 0.15, max 13 (on the border; 1
  inside), 99.9th percentile 2. Embedded: evaluation mean 0.19, max 1; training mean 0.18,
  max 3.
- EXIF orientation is ignored by both (torchvision's ``decode_image`` default;
  ``adjust_orientation=False`` here), so the header's height and width are the decoded ones.

``DaliInput`` builds each pipeline once (per split, batch and image size) and runs it across
epochs; ``train_batches`` / ``eval_batches`` here build one for a single call.
"""
from __future__ import annotations

import collections
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlperf_fast.data.dali import dali_available
from mlperf_fast.data.loader import WaitClock, load_ahead
from mlperf_fast.data.samplers import ShuffledBatches, split_micro_batches
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.resnet.data import ImageSet
from mlperf_fast.workloads.resnet.pipeline import (
    REFERENCE,
    Preprocessing,
    augment_rng,
    decode,
    eval_shards,
    eval_window,
    train_window,
)

LAYOUTS = ("NCHW", "NHWC")
DTYPES = (torch.float32, torch.bfloat16)

# JPEG's start-of-frame markers (ITU-T T.81 table B.1): 0xC0-0xCF except DHT, JPG and DAC
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field: TEM and the restart markers
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


# -- image sizes from headers ---------------------------------------------------------------------
def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame segment, or None if ``data`` is not a JPEG
    whose header says so (not a JPEG, truncated, or a height left to a DNL segment)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None  # not at a marker: a damaged header
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan before any frame
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            # FF Cx, length (2), precision (1), height (2), width (2)
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return (h, w) if h and w else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def image_size(data: bytes, where: str = "image") -> tuple[int, int]:
    """(height, width) of encoded image bytes, from the header alone (nothing decoded): the JPEG
    SOF marker, else Pillow's lazy open (ImageNet has a PNG among its "JPEG"s). DataError naming
    ``where`` if neither reads it."""
    hw = jpeg_size(data)
    if hw is not None:
        return hw
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as e:  # any failure of Pillow's means the bytes are not an image
        raise DataError(f"{where} does not decode as an image (its header: {e})") from e
    return h, w


class _Sizes:
    """Each image's (height, width), read from its header the first time it is loaded."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images
        self.hw = np.zeros((len(images), 2), dtype=np.int64)  # 0: not read yet

    def __call__(self, i: int, data: bytes) -> tuple[int, int]:
        if self.hw[i, 0] == 0:
            self.hw[i] = image_size(data, self.images.describe(i))
        return int(self.hw[i, 0]), int(self.hw[i, 1])


# -- what the host computes per batch -------------------------------------------------------------
@dataclass
class _Feed:
    """One batch for DALI: the images' indices and, per external source, one array per image."""

    indices: list[int]
    inputs: dict[str, list[np.ndarray]]


def train_windows(images: ImageSet, indices: Sequence[int], seed: int, epoch: int,
                  prep: Preprocessing = REFERENCE, sizes: Callable[[int, bytes], tuple[int, int]]
                  | None = None) -> tuple[np.ndarray, list[bytes]]:
    """The training views of ``indices`` in ``epoch`` as the pipeline makes them: int64 [B, 5]
    (top, left, crop height, crop width, flipped) from ``pipeline.train_window`` on each image's
    header size and ``augment_rng(seed, epoch, index)``, and the images' bytes. ``sizes``: a
    cache of header sizes (``_Sizes``); by default each header is read."""
    windows = np.zeros((len(indices), 5), dtype=np.int64)
    encoded = []
    for row, i in enumerate(indices):
        data = images.load(i)
        h, w = sizes(i, data) if sizes is not None else image_size(data, images.describe(i))
        windows[row] = train_window(h, w, augment_rng(seed, epoch, i), images.boxes(i), prep)
        encoded.append(data)
    return windows, encoded


class _TrainFeed:
    """``(indices, epoch) -> _Feed``: bytes, windows and flips of a training batch."""

    def __init__(self, images: ImageSet, sizes: _Sizes, seed: int, prep: Preprocessing) -> None:
        self.images, self.sizes, self.seed, self.prep = images, sizes, seed, prep

    def __call__(self, key: tuple[Sequence[int], int]) -> _Feed:
        indices, epoch = key
        windows, encoded = train_windows(self.images, indices, self.seed, epoch, self.prep,
                                         self.sizes)
        # one dense array per image (DALI takes no strided views)
        return _Feed(list(indices), {
            "encoded": [np.frombuffer(d, dtype=np.uint8) for d in encoded],
            "anchor": [np.array([x, y], dtype=np.int32) for y, x in windows[:, :2]],  # "WH"
            "shape": [np.array([w, h], dtype=np.int32) for h, w in windows[:, 2:4]],
            "mirror": [np.array(f, dtype=np.int32) for f in windows[:, 4]],
        })


class _EvalFeed:
    """``indices -> _Feed``: bytes, resized sizes and crop corners of an evaluation batch."""

    def __init__(self, images: ImageSet, sizes: _Sizes, size: int, prep: Preprocessing) -> None:
        self.images, self.sizes, self.size, self.prep = images, sizes, size, prep

    def __call__(self, indices: Sequence[int]) -> _Feed:
        inputs: dict[str, list[np.ndarray]] = {"encoded": [], "resized": [], "corner": []}
        for i in indices:
            data = self.images.load(i)
            nh, nw, top, left = eval_window(*self.sizes(i, data), self.size, self.prep)
            inputs["encoded"].append(np.frombuffer(data, dtype=np.uint8))
            inputs["resized"].append(np.array([nh, nw], dtype=np.float32))  # resize's (H, W)
            inputs["corner"].append(np.array([left, top], dtype=np.int32))  # slice's (x, y)
        return _Feed(list(indices), inputs)


# -- the DALI graph -------------------------------------------------------------------------------
TRAIN_INPUTS = ("encoded", "anchor", "shape", "mirror")
EVAL_INPUTS = ("encoded", "resized", "corner")


def _graph(train: bool, batch: int, size: int, device_id: int | None, num_threads: int,
           layout: str, prep: Preprocessing, depth: int, source: Callable[[], tuple]) -> Any:
    """The built DALI pipeline of one view. ``source()`` gives each batch's inputs (the arrays
    of ``TRAIN_INPUTS`` or ``EVAL_INPUTS``, one list each) and raises StopIteration at the end."""
    from nvidia.dali import fn, pipeline_def, types

    decoding = {"device": "mixed" if device_id is not None else "cpu",
                "output_type": types.RGB,  # grey and CMYK converted, as the CPU path does
                "adjust_orientation": False,  # torchvision's decode_image ignores EXIF too
                "jpeg_fancy_upsampling": True}  # libjpeg's chroma upsampling on the GPU too
    resizing = {"interp_type": types.INTERP_LINEAR, "antialias": True}

    # no random operators: every draw is made on the host, so the seed changes nothing
    @pipeline_def(batch_size=batch, num_threads=num_threads, device_id=device_id, seed=0,
                  prefetch_queue_depth=depth)
    def graph():
        if train:
            encoded, anchor, shape, mirror = fn.external_source(
                source, num_outputs=4, batch=True, dtype=[types.UINT8, types.INT32, types.INT32,
                                                          types.INT32], ndim=[1, 1, 1, 0])
            # integer anchor and shape: absolute pixels; only the window is decoded
            images = fn.decoders.image_slice(encoded, anchor, shape, **decoding)
            images = fn.resize(images, size=[size, size], **resizing)
        else:
            encoded, resized, corner = fn.external_source(
                source, num_outputs=3, batch=True, dtype=[types.UINT8, types.FLOAT, types.INT32],
                ndim=[1, 1, 1])
            mirror = 0
            images = fn.resize(fn.decoders.image(encoded, **decoding), size=resized, **resizing)
            # the crop's exact corner (crop_mirror_normalize's crop_pos would round it itself)
            images = fn.slice(images, start=corner, shape=[size, size], axis_names="WH")
        return fn.crop_mirror_normalize(images, mirror=mirror, mean=list(prep.mean),
                                        std=list(prep.std), dtype=types.FLOAT,
                                        output_layout="CHW" if layout == "NCHW" else "HWC")

    pipe = graph()
    pipe.build()
    return pipe


class _Runner:
    """One built pipeline, run ``depth`` batches ahead of its consumer (DALI pulls the feeds
    from ``source`` itself; one run is one DALI epoch, ended by StopIteration and ``reset``). A
    run left early is drained when the next one starts."""

    def __init__(self, train: bool, images: ImageSet, batch: int, size: int,
                 prep: Preprocessing, loader: DaliInput) -> None:
        self.images, self.size, self.device = images, size, loader.device
        self.layout, self.dtype = loader.layout, loader.dtype
        self.names = TRAIN_INPUTS if train else EVAL_INPUTS
        self._feeds: Iterator[_Feed] = iter(())
        self._given: collections.deque[_Feed] = collections.deque()  # fed, output not taken
        self.generation = 0  # which run may use the pipeline (a newer one supersedes)
        self.open = False  # a run has started and not reached its end
        self.broken = False
        self.pipe = _graph(train, batch, size, loader.device_id, loader.num_threads,
                           loader.layout, prep, loader.depth, self._source)

    def _source(self) -> tuple[list[np.ndarray], ...]:
        feed = next(self._feeds)  # StopIteration ends DALI's epoch
        self._given.append(feed)
        return tuple(feed.inputs[name] for name in self.names)

    def run(self, feeds: Iterable[_Feed], rows: int | None = None) -> Iterator[torch.Tensor]:
        """The images of each feed, in order: [B, 3, S, S] (``rows``: padded with zeros to that
        many rows; empty feeds give zeros without running DALI)."""
        if self.open:  # an earlier run was left: take what DALI still holds of it
            self._feeds = iter(())
            self._end()
        self.generation += 1
        return self._run(iter(feeds), rows, self.generation)

    def _end(self) -> None:
        try:
            while True:
                self.pipe.run()
        except StopIteration:
            pass
        self.pipe.reset()
        self._given.clear()
        self.open = False

    def _run(self, feeds: Iterator[_Feed], rows: int | None, generation: int,
             ) -> Iterator[torch.Tensor]:
        order: collections.deque[bool] = collections.deque()  # per batch seen: given to DALI?

        def nonempty() -> Iterator[_Feed]:  # empty batches are zeros, made here
            for feed in feeds:
                order.append(bool(feed.indices))
                if feed.indices:
                    yield feed

        self._feeds, self.open = nonempty(), True
        while True:
            self._check(generation)
            if order and not order[0]:
                order.popleft()
                yield self._tensor(None, 0, rows)
                continue
            try:  # the next batch is DALI's, or not seen yet
                outputs = self._next()
            except StopIteration:
                break
            feed = self._given.popleft()
            order.popleft()
            yield self._tensor(outputs, len(feed.indices), rows)
        self._check(generation)
        self.pipe.reset()
        self.open = False
        for _ in order:  # empty batches after the last image
            yield self._tensor(None, 0, rows)

    def _check(self, generation: int) -> None:
        if generation != self.generation:
            raise RuntimeError("this DALI pipeline has been restarted by a later call; the "
                               "batches of the earlier one are gone")

    def _next(self) -> Any:
        try:
            return self.pipe.run()
        except StopIteration:
            raise
        except DataError:  # from the host's side (a header that does not read)
            self.broken = True
            raise
        except Exception as e:
            self.broken = True
            raise self._culprit(e) from e

    def _tensor(self, outputs: Any, n: int, rows: int | None) -> torch.Tensor:
        s = self.size
        shape = (rows or n, s, s, 3) if self.layout == "NHWC" else (rows or n, 3, s, s)
        out = torch.zeros(shape, dtype=torch.float32, device=self.device)
        if outputs is not None:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            stream = (torch.cuda.current_stream(self.device) if self.device.type == "cuda"
                      else None)
            feed_ndarray(outputs[0].as_tensor(), out[:n], cuda_stream=stream)
        if self.layout == "NHWC":  # [B, 3, S, S]-shaped, channels-last in memory
            out = out.permute(0, 3, 1, 2)
        return out if self.dtype == torch.float32 else out.to(self.dtype)

    def _culprit(self, error: Exception) -> Exception:
        """The DataError naming the image DALI failed on, found by decoding the batches in
        flight on the CPU; the DALI error itself if they all decode."""
        indices = [i for feed in self._given for i in feed.indices]
        for i in indices:
            try:
                decode(self.images.load(i), self.images.describe(i))
            except DataError as e:
                return e
        where = f" on the batch starting with {self.images.describe(indices[0])}" if indices else ""
        return RuntimeError(f"DALI failed{where}: {error}")


# -- the entry points -----------------------------------------------------------------------------
def _require_dali() -> None:
    if not dali_available():
        raise ModuleNotFoundError(
            "NVIDIA DALI is not installed: pip install 'mlperf-fast[dali]' (nvidia-dali-cuda130); "
            "without it, use the CPU pipeline (workloads/resnet/pipeline.py)")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")


class DaliInput:
    """ResNet's input through DALI, with pipeline.py's ``train_batches`` / ``eval_batches``
    contract; each pipeline (per split, batch size, image size and preprocessing) is built on
    first use and kept for later epochs and evaluations.

    ``device_id``: the CUDA device (decoding "mixed", on nvJPEG or the hardware decoder; resizing
    and normalizing on the GPU; outputs on ``cuda:device_id``), or None: every operator on the
    CPU, outputs on the CPU (for machines without a GPU, and the tests). ``num_threads``: DALI's
    host threads. ``layout``: "NCHW" (contiguous [B, 3, S, S], as the CPU path) or "NHWC"
    ([B, 3, S, S]-shaped in channels-last memory, which the model wants: its
    ``contiguous(memory_format=torch.channels_last)`` is then free). ``dtype``: torch.float32
    or torch.bfloat16 (normalized in float32, then rounded). ``depth``: batches in flight in
    DALI, and batches planned ahead on the host (a thread reads the files and draws the crops).
    """

    def __init__(self, device_id: int | None = None, num_threads: int = 2,
                 layout: str = "NCHW", dtype: torch.dtype = torch.float32, depth: int = 2) -> None:
        _require_dali()
        if device_id is not None:
            if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
                raise ValueError(f"device_id must be a CUDA device index or None, got "
                                 f"{device_id!r}")
            if not torch.cuda.is_available() or device_id >= torch.cuda.device_count():
                raise ValueError(f"device_id {device_id}: there is no such CUDA device "
                                 f"({torch.cuda.device_count()} visible); None runs DALI on "
                                 "the CPU")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.device_id, self.num_threads, self.layout = device_id, num_threads, layout
        self.dtype, self.depth = dtype, depth
        self.device = torch.device("cpu") if device_id is None else torch.device("cuda",
                                                                                 device_id)
        self._runners: dict[tuple, _Runner] = {}
        self._sizes: dict[int, _Sizes] = {}  # by id(images); each _Sizes holds its ImageSet

    def _sizes_of(self, images: ImageSet) -> _Sizes:
        sizes = self._sizes.get(id(images))
        if sizes is None or sizes.images is not images:
            sizes = self._sizes[id(images)] = _Sizes(images)
        return sizes

    def _runner(self, images: ImageSet, train: bool, batch: int, size: int,
                prep: Preprocessing) -> _Runner:
        key = (id(images), train, batch, size, prep)
        runner = self._runners.get(key)
        if runner is None or runner.broken or runner.images is not images:
            runner = self._runners[key] = _Runner(train, images, batch, size, prep, self)
        return runner

    def _labels(self, images: ImageSet, indices: Sequence[int], rows: int) -> torch.Tensor:
        labels = torch.zeros(rows, dtype=torch.int64)
        labels[:len(indices)] = torch.from_numpy(images.labels[list(indices)].astype(np.int64))
        return labels.to(self.device)

    def train_batches(self, images: ImageSet, global_batch: int, seed: int, epoch: int,
                      rank: int = 0, world_size: int = 1, size: int = 224,
                      prep: Preprocessing = REFERENCE, micro_batch: int | None = None,
                      start: int = 0, stop: int | None = None, clock: WaitClock | None = None,
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's slice of each global batch of ``epoch`` as ``(images, labels)``: [global_
        batch / world_size, 3, size, size] in ``dtype`` and ``layout``, and int64
        [global_batch / world_size], on the device. The batches, views and arguments are
        ``pipeline.train_batches``'s (see there)."""
        _check_size(size)
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        batches = ShuffledBatches(len(images), global_batch, seed, rank, world_size).epoch(epoch)
        batches = batches[start:stop]
        if micro_batch is not None:
            batches = [m for b in batches for m in split_micro_batches(b, micro_batch)]
        most = min(global_batch // world_size, micro_batch or global_batch)
        runner = self._runner(images, True, most, size, prep)
        plan = _TrainFeed(images, self._sizes_of(images), seed, prep)
        feeds = load_ahead(plan, [(b, epoch) for b in batches], workers=0, depth=self.depth)
        it = self._pairs(images, runner.run(feeds), batches)
        return clock.timed(it) if clock is not None else it

    def _pairs(self, images: ImageSet, outputs: Iterator[torch.Tensor],
               batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, indices in zip(outputs, batches):
            yield x, self._labels(images, indices, len(indices))

    def eval_batches(self, images: ImageSet, batch: int, rank: int = 0, world_size: int = 1,
                     size: int = 224, prep: Preprocessing = REFERENCE,
                     clock: WaitClock | None = None,
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This rank's share of the validation images (``pipeline.eval_shards``) as ``(images,
        labels, valid)``: [batch, 3, size, size] in ``dtype`` and ``layout``, int64 [batch],
        bool [batch], on the device; rows past the last image are zeros, label 0, ``valid``
        False. Across the ranks every image comes once."""
        _check_size(size)
        shards = eval_shards(len(images), batch, rank, world_size)
        runner = self._runner(images, False, batch, size, prep)
        feeds = load_ahead(_EvalFeed(images, self._sizes_of(images), size, prep), shards,
                           workers=0, depth=self.depth)
        it = self._triples(images, runner.run(feeds, rows=batch), shards, batch)
        return clock.timed(it) if clock is not None else it

    def _triples(self, images: ImageSet, outputs: Iterator[torch.Tensor],
                 shards: list[list[int]], batch: int,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x, indices in zip(outputs, shards):
            valid = (torch.arange(batch) < len(indices)).to(self.device)
            yield x, self._labels(images, indices, batch), valid


def train_batches(images: ImageSet, global_batch: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, size: int = 224, prep: Preprocessing = REFERENCE,
                  micro_batch: int | None = None, start: int = 0, stop: int | None = None,
                  clock: WaitClock | None = None, depth: int = 2, *,
                  device_id: int | None = None, num_threads: int = 2, layout: str = "NCHW",
                  dtype: torch.dtype = torch.float32,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``pipeline.train_batches`` through a DALI pipeline built for this call (a run keeps a
    ``DaliInput`` instead, which builds it once). See ``DaliInput`` for the keyword arguments."""
    return DaliInput(device_id, num_threads, layout, dtype, depth).train_batches(
        images, global_batch, seed, epoch, rank, world_size, size, prep, micro_batch, start,
        stop, clock)


def eval_batches(images: ImageSet, batch: int, rank: int = 0, world_size: int = 1,
                 size: int = 224, prep: Preprocessing = REFERENCE,
                 clock: WaitClock | None = None, depth: int = 2, *,
                 device_id: int | None = None, num_threads: int = 2, layout: str = "NCHW",
                 dtype: torch.dtype = torch.float32,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``pipeline.eval_batches`` through a DALI pipeline built for this call (see
    ``train_batches``)."""
    return DaliInput(device_id, num_threads, layout, dtype, depth).eval_batches(
        images, batch, rank, world_size, size, prep, clock)
