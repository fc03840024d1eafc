"""ImageNet's two on-disk layouts, read into one ``ImageSet`` per split.

- **ImageFolder**: ``DIR/train/<wnid>/*.JPEG`` and ``DIR/val/<wnid>/*.JPEG`` (``.jpeg`` and
  ``.jpg`` too, in any case). The classes are the sorted folder names of ``train`` (label 0 to
  C - 1); ``val`` must have the same class folders.
- **TFRecord**: the reference's shards ``DIR/train-%05d-of-01024`` and
  ``DIR/validation-%05d-of-00128`` (mlcommons/training image_classification/tensorflow2/
  imagenet_preprocessing.py:161,165; any ``train-*-of-N`` / ``validation-*-of-N`` set), each
  record a tf.train.Example with ``image/encoded`` (the JPEG) and ``image/class/label`` (int64,
  1-based: the reference subtracts 1, :263), and the optional boxes ``image/object/bbox/{ymin,
  xmin,ymax,xmax}`` that its training crop honours (:212-236). The shards are indexed once
  (every CRC checked, every label and box read) and the index is kept in the verified cache
  under the shards' names, sizes and modification times; a record is then read by (shard,
  offset, length).

``open_split(data_dir, "train" | "val")`` reads either layout; ``check_dataset(data_dir)`` says
what is missing before a run starts. ``write_tfrecords`` writes the reference's shards (the tests'
round trip; ``imagefolder_to_tfrecords`` converts a whole ImageFolder data set).
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlperf_fast.data import tfrecord
from mlperf_fast.harness.workload import DataError

SPLITS = ("train", "val")
#: the split's folder (ImageFolder) and shard prefix (TFRecord)
FOLDERS = {"train": "train", "val": "val"}
PREFIXES = {"train": "train", "val": "validation"}
IMAGE_EXTENSIONS = (".jpeg", ".jpg")  # compared in lower case: .JPEG is ImageNet's
ENCODED, LABEL = "image/encoded", "image/class/label"
BOX_KEYS = ("image/object/bbox/ymin", "image/object/bbox/xmin", "image/object/bbox/ymax",
            "image/object/bbox/xmax")  # the reference's order (ymin, xmin, ymax, xmax)
#: bump when the index's content changes (part of its cache key)
INDEX_VERSION = 1
_SHARD = re.compile(r"^(?P<prefix>[a-z]+)-(?P<i>\d+)-of-(?P<n>\d+)$")


@dataclass
class ImageSet:
    """One split's images: ``labels`` int64 [N] in [0, num_classes); either ``paths`` (one file
    per image, ImageFolder) or ``shards`` with ``records`` int64 [N, 3] (shard index, data
    offset, data length; TFRecord). ``classes``: the class folders' names where known.
    ``box_starts`` int64 [N + 1] and ``box_coords`` float32 [M, 4] hold each image's boxes
    (TFRecord only; see ``boxes``)."""

    root: str
    split: str
    labels: np.ndarray
    num_classes: int
    classes: tuple[str, ...] | None = None
    paths: list[str] | None = None
    shards: list[str] | None = None
    records: np.ndarray | None = None
    box_starts: np.ndarray | None = None
    box_coords: np.ndarray | None = field(default=None, repr=False)

    @property
    def layout(self) -> str:
        return "imagefolder" if self.paths is not None else "tfrecord"

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self, i: int) -> str:
        """Where image ``i`` lives, for messages: its file, or its shard and offset."""
        if self.paths is not None:
            return self.paths[i]
        shard, offset, _ = self.records[i].tolist()
        return f"{self.shards[shard]} (record at offset {offset - 12})"

    def load(self, i: int) -> bytes:
        """The encoded image ``i`` (JPEG bytes, as stored)."""
        if self.paths is not None:
            try:
                with open(self.paths[i], "rb") as f:
                    return f.read()
            except OSError as e:
                raise DataError(f"{self.paths[i]} cannot be read ({e})") from e
        shard, offset, length = self.records[i].tolist()
        data = tfrecord.read_record(self.shards[shard], offset, length)
        try:
            encoded = tfrecord.decode_example(data, keys=(ENCODED,)).get(ENCODED)
        except ValueError as e:
            raise DataError(f"{self.describe(i)}: not a tf.train.Example ({e})") from e
        if not encoded:
            raise DataError(f"{self.describe(i)}: no {ENCODED}")
        return encoded[0]

    def boxes(self, i: int) -> np.ndarray:
        """Image ``i``'s object boxes, float32 [K, 4] as (ymin, xmin, ymax, xmax) in [0, 1];
        [0, 4] where there are none (the crop then takes the whole image as the object)."""
        if self.box_starts is None:
            return np.zeros((0, 4), dtype=np.float32)
        return self.box_coords[self.box_starts[i]:self.box_starts[i + 1]]


# -- ImageFolder ----------------------------------------------------------------------------------
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_folders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scan_imagefolder(data_dir: str, split: str) -> ImageSet:
    train_dir = os.path.join(data_dir, FOLDERS["train"])
    folder = os.path.join(data_dir, FOLDERS[split])
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir} has no class folders (expected {train_dir}/<wnid>/*.JPEG)")
    if split != "train":
        if not os.path.isdir(folder):
            raise DataError(f"{folder} is missing (expected {folder}/<wnid>/*.JPEG with the "
                            f"class folders of {train_dir})")
        found = _class_folders(folder)
        if found != classes:
            missing = sorted(set(classes) - set(found))
            extra = sorted(set(found) - set(classes))
            raise DataError(
                f"{folder}: its class folders differ from {train_dir}'s "
                f"({len(found)} against {len(classes)}; missing: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}; not in train: {extra[:5]}"
                f"{' ...' if len(extra) > 5 else ''}). A flat validation folder must first be "
                "sorted into one folder per class")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        d = os.path.join(folder, name)
        files = sorted(e.name for e in os.scandir(d) if e.is_file() and _is_image(e.name))
        if not files and split == "train":
            raise DataError(f"{d} holds no images (*.JPEG, *.jpeg or *.jpg)")
        paths.extend(os.path.join(d, f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"{folder} holds no images in its class folders")
    return ImageSet(root=data_dir, split=split, labels=np.asarray(labels, dtype=np.int64),
                    num_classes=len(classes), classes=tuple(classes), paths=paths)


# -- TFRecord -------------------------------------------------------------------------------------
def shard_paths(data_dir: str, split: str) -> list[str]:
    """The split's shards in order, checked to be one complete set ``<prefix>-i-of-N``, i < N.
    Empty when there are none."""
    prefix = PREFIXES[split]
    found = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"{prefix}-*-of-*")))
    if not found:
        return []
    by_total: dict[int, dict[int, str]] = {}
    for path in found:
        m = _SHARD.match(os.path.basename(path))
        if m is None or m["prefix"] != prefix:
            raise DataError(f"{path}: not a shard name of the form {prefix}-00000-of-01024")
        by_total.setdefault(int(m["n"]), {})[int(m["i"])] = path
    if len(by_total) > 1:
        raise DataError(f"{data_dir}: {prefix} shards of several sets "
                        f"(-of-{', -of-'.join(str(n) for n in sorted(by_total))})")
    (total, shards), = by_total.items()
    beyond = [i for i in shards if i >= total]
    if beyond:
        raise DataError(f"{shards[beyond[0]]}: shard number {beyond[0]} is not below {total}")
    missing = [i for i in range(total) if i not in shards]
    if missing:
        raise DataError(f"{data_dir}: {len(missing)} of the {total} {prefix} shards are missing "
                        f"(the first: {prefix}-{missing[0]:05d}-of-{total:05d})")
    return [shards[i] for i in range(total)]


def _index_shard(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(offsets, lengths, 1-based labels, boxes) of every record of one shard."""
    data, offsets, lengths = tfrecord.load_records(path)
    raw = memoryview(data)
    labels = np.empty(len(offsets), dtype=np.int64)
    boxes: list[np.ndarray] = []
    keys = (LABEL, *BOX_KEYS)
    for r, (off, n) in enumerate(zip(offsets.tolist(), lengths.tolist())):
        where = f"{path} (record at offset {off - 12})"
        try:
            feats = tfrecord.decode_example(raw[off:off + n], keys=keys)
        except ValueError as e:
            raise DataError(f"{where}: not a tf.train.Example ({e})") from e
        label = feats.get(LABEL)
        if not label or len(label) != 1 or not isinstance(label[0], int):
            raise DataError(f"{where}: {LABEL} must be one int64, got {label!r}")
        labels[r] = label[0]
        coords = [feats.get(k, []) for k in BOX_KEYS]
        if len({len(c) for c in coords}) != 1:
            raise DataError(f"{where}: the box coordinates have different counts "
                            f"{[len(c) for c in coords]}")
        b = np.asarray(coords, dtype=np.float32).T.reshape(-1, 4)
        if not ((b >= 0) & (b <= 1)).all():  # the reference's op refuses these too
            raise DataError(f"{where}: a box coordinate outside [0, 1]")
        boxes.append(b)
    return offsets, lengths, labels, boxes


def _build_index(shards: Sequence[str], out: str, log: Callable[[str], None]) -> None:
    """Index every shard (in worker processes where there are cores to spare: ImageNet's 1,024
    training shards take about 10 minutes on one core, mostly the CRCs) into ``out/index.npz``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mlperf_fast.data.loader import default_workers

    workers = min(default_workers(reserved=1, cap=16), len(shards))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(_logged(pool.map(_index_shard, shards), shards, log))
    else:
        parts = list(_logged(map(_index_shard, shards), shards, log))
    records, labels, box_counts, coords = [], [], [], []
    for s, (offsets, lengths, lab, boxes) in enumerate(parts):
        records.append(np.stack([np.full(len(offsets), s), offsets, lengths], axis=1))
        labels.append(lab)
        box_counts.extend(len(b) for b in boxes)
        coords.extend(boxes)
    np.savez(os.path.join(out, "index.npz"),
             records=np.concatenate(records).astype(np.int64).reshape(-1, 3),
             labels=np.concatenate(labels).astype(np.int64),
             box_starts=np.concatenate([[0], np.cumsum(box_counts, dtype=np.int64)]),
             box_coords=(np.concatenate(coords) if coords else np.zeros((0, 4)))
             .astype(np.float32))


def _logged(parts, shards: Sequence[str], log: Callable[[str], None]):
    step = max(1, len(shards) // 8)
    for s, part in enumerate(parts):
        if len(shards) > 1 and (s + 1) % step == 0:
            log(f"resnet: indexed {s + 1} of {len(shards)} shards")
        yield part


def _open_tfrecord(data_dir: str, split: str, shards: list[str], num_classes: int | None,
                   log: Callable[[str], None]) -> ImageSet:
    from mlperf_fast.data.cache import cached

    key = {"version": INDEX_VERSION, "shards": [
        (os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in shards]}
    folder = cached("resnet", f"tfrecord-index-{PREFIXES[split]}", key,
                    lambda out: _build_index(shards, out, log), log=log,
                    what=f"the index of {len(shards)} {PREFIXES[split]} shards in {data_dir}")
    with np.load(os.path.join(folder, "index.npz")) as f:
        records, labels = f["records"], f["labels"] - 1  # 1-based on disk
        box_starts, box_coords = f["box_starts"], f["box_coords"]
    if len(labels) == 0:
        raise DataError(f"{data_dir}: the {PREFIXES[split]} shards hold no records")
    n_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{shards[records[i, 0]]} (record at offset {records[i, 1] - 12}): "
                        f"{LABEL} {labels[i] + 1} is outside 1..{n_classes} (the reference's "
                        "labels are 1-based)")
    return ImageSet(root=data_dir, split=split, labels=labels, num_classes=n_classes,
                    shards=list(shards), records=records,
                    box_starts=box_starts if len(box_coords) else None,
                    box_coords=box_coords if len(box_coords) else None)


# -- the entry points -----------------------------------------------------------------------------
def detect_layout(data_dir: str) -> str:
    """"imagefolder" or "tfrecord"; DataError saying what was expected if neither is there."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir} is not a folder")
    if os.path.isdir(os.path.join(data_dir, FOLDERS["train"])):
        return "imagefolder"
    if glob.glob(os.path.join(glob.escape(data_dir), f"{PREFIXES['train']}-*-of-*")):
        return "tfrecord"
    entries = sorted(os.listdir(data_dir))
    raise DataError(
        f"{data_dir} is neither ImageNet layout: expected train/<wnid>/*.JPEG and "
        "val/<wnid>/*.JPEG (ImageFolder), or the reference's TFRecord shards "
        "train-00000-of-01024 ... and validation-00000-of-00128 ...; found "
        f"{entries[:8] if entries else 'nothing'}{' ...' if len(entries) > 8 else ''}")


def open_split(data_dir: str, split: str, num_classes: int | None = None,
               log: Callable[[str], None] = print) -> ImageSet:
    """The images of ``split`` ("train" or "val") in ``data_dir``, in either layout.

    ``num_classes``: TFRecord only (ImageFolder counts its class folders): the labels' range,
    checked; by default the largest label of the split. ``log`` reports indexing progress.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if detect_layout(data_dir) == "imagefolder":
        return _scan_imagefolder(data_dir, split)
    shards = shard_paths(data_dir, split)
    if not shards:
        raise DataError(f"{data_dir}: no {PREFIXES[split]}-*-of-* shards (the reference's "
                        f"TFRecord layout has {PREFIXES[split]}-00000-of-NNNNN ...)")
    return _open_tfrecord(data_dir, split, shards, num_classes, log)


def check_dataset(data_dir: str) -> None:
    """DataError naming what is missing or malformed, before any run writes anything: the
    ImageFolder's class folders of both splits, or both TFRecord shard sets complete and
    non-empty (their CRCs are checked when they are first indexed)."""
    if detect_layout(data_dir) == "imagefolder":
        for split in SPLITS:
            _scan_imagefolder(data_dir, split)
        return
    for split in SPLITS:
        shards = shard_paths(data_dir, split)
        if not shards:
            raise DataError(f"{data_dir}: no {PREFIXES[split]}-*-of-* shards")
        if not any(os.path.getsize(p) for p in shards):
            raise DataError(f"{data_dir}: every {PREFIXES[split]} shard is empty")


# -- writing --------------------------------------------------------------------------------------
def write_tfrecords(samples: Sequence[tuple[bytes, int]], out_dir: str, prefix: str,
                    num_shards: int, boxes: Sequence[np.ndarray] | None = None,
                    synsets: Sequence[str] | None = None) -> list[str]:
    """Write ``samples`` ((JPEG bytes, 0-based label) each) as the reference's shards
    ``out_dir/<prefix>-%05d-of-%05d``, in order, shard ``k`` holding samples
    ``[k * n // num_shards, (k + 1) * n // num_shards)``. Labels are stored 1-based, as the
    reference reads them. ``boxes``: per sample, float [K, 4] (ymin, xmin, ymax, xmax) in [0, 1];
    ``synsets``: the class names by label (written as ``image/class/synset``). Returns the paths.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if boxes is not None and len(boxes) != len(samples):
        raise ValueError(f"{len(boxes)} box lists for {len(samples)} samples")
    os.makedirs(out_dir, exist_ok=True)
    n = len(samples)
    paths = []

    def example(i: int) -> bytes:
        data, label = samples[i]
        feats: dict = {ENCODED: bytes(data), "image/format": b"JPEG", LABEL: int(label) + 1}
        if synsets is not None:
            feats["image/class/synset"] = synsets[label]
        if boxes is not None and len(boxes[i]):
            b = np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4)
            feats.update({k: b[:, j].tolist() for j, k in enumerate(BOX_KEYS)})
        return tfrecord.encode_example(feats)

    for k in range(num_shards):
        path = os.path.join(out_dir, f"{prefix}-{k:05d}-of-{num_shards:05d}")
        lo, hi = k * n // num_shards, (k + 1) * n // num_shards
        tfrecord.write_records(path, (example(i) for i in range(lo, hi)))
        paths.append(path)
    return paths


def imagefolder_to_tfrecords(src_dir: str, out_dir: str, train_shards: int = 1024,
                             val_shards: int = 128, seed: int = 0) -> None:
    """Convert an ImageFolder data set into the reference's shards (the training images in a
    seeded random order across shards, as the reference's conversion shuffles them; the
    validation images in order)."""
    for split, shards in (("train", train_shards), ("val", val_shards)):
        s = _scan_imagefolder(src_dir, split)
        order = (np.random.default_rng(seed).permutation(len(s)) if split == "train"
                 else np.arange(len(s)))
        samples = _Lazy(s, order)
        write_tfrecords(samples, out_dir, PREFIXES[split], shards, synsets=s.classes)


class _Lazy(Sequence):
    """(bytes, label) of an ImageSet's images in ``order``, read when asked for."""

    def __init__(self, images: ImageSet, order: np.ndarray) -> None:
        self.images, self.order = images, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i):  # type: ignore[override]
        j = int(self.order[i])
        return self.images.load(j), int(self.images.labels[j])
