"""COCO-format detection sets: one reader, one writer, the two on-disk layouts, and a Dataset.

The two layouts the detection benchmarks train on:

- **COCO 2017** (SSD): ``root/{train2017,val2017}/*.jpg`` and
  ``root/annotations/instances_{train,val}2017.json`` (mlcommons/training
  single_stage_detector/ssd/coco_utils.py ``get_coco``).
- **The MLPerf OpenImages subset** (RetinaNet): ``root/{train,validation}/data/*.jpg`` and
  ``root/{train,validation}/labels/openimages-mlperf.json`` (coco_utils.py ``get_openimages``;
  scripts/download_openimages_mlperf.sh names the file). That json is FiftyOne's COCO export of
  264 classes, with ``iscrowd`` set from OpenImages' ``IsGroupOf`` (scripts/fiftyone_openimages.py);
  a raw export without ``iscrowd`` is read through ``IsGroupOf`` the same way.

In the json a box is ``[x, y, w, h]`` in pixels; in memory it is XYXY float32. Labels are
contiguous, 0..C-1, the index of the category in the categories sorted by id.

What the reader rejects (``DataError`` naming the file): a missing file, bad JSON, a missing key,
a box with a negative (or non-finite) width or height, a box further outside its image than
``tolerance`` pixels, an unknown category or image id, a duplicate image or category id, and a
missing image file. Two departures from rejecting everything, because the real files need them:
boxes that overhang their image by less than ``tolerance`` are clipped to it (the reference
clamps every box to its image, coco_utils.py ``ConvertCocoPolysToMask``), and boxes of zero
width or height are dropped and counted in ``CocoSet.dropped`` (instances_train2017.json holds
two, of height 0, in images 200365 and 550395: cocodataset/cocoapi issue 355; the reference
drops such boxes with its ``keep`` filter). ``strict=True`` makes both of those errors instead.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlperf_fast.harness.workload import DataError

OPENIMAGES_SPLITS = ("train", "validation")
COCO2017_SPLITS = ("train", "val")
OPENIMAGES_LABELS = "openimages-mlperf.json"
#: how far (pixels) a box may overhang its image before it is an error rather than clipped
DEFAULT_TOLERANCE = 2.0


# -- layouts --------------------------------------------------------------------------------------
def openimages_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of the MLPerf OpenImages layout: ``root/split/data`` and
    ``root/split/labels/openimages-mlperf.json``; ``split`` is "train" or "validation"."""
    if split not in OPENIMAGES_SPLITS:
        raise ValueError(f"openimages_paths: split must be one of {OPENIMAGES_SPLITS}, got "
                         f"{split!r}")
    base = Path(root) / split
    return base / "data", base / "labels" / OPENIMAGES_LABELS


def coco2017_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of the COCO 2017 layout: ``root/{split}2017`` and
    ``root/annotations/instances_{split}2017.json``; ``split`` is "train" or "val"."""
    if split not in COCO2017_SPLITS:
        raise ValueError(f"coco2017_paths: split must be one of {COCO2017_SPLITS}, got "
                         f"{split!r}")
    root = Path(root)
    return root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json"


# -- the set in memory ----------------------------------------------------------------------------
class Ragged(Sequence):
    """Per-image arrays stored as one flat array and offsets: ``r[i]`` is the view
    ``flat[offsets[i]:offsets[i + 1]]``. It reads like a list of arrays but costs two arrays,
    not one object per image (OpenImages' train split has 1.7 million boxes in 1.2 million
    images)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_list(cls, arrays: Sequence[np.ndarray], empty: np.ndarray) -> Ragged:
        counts = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.concatenate(list(arrays)) if len(arrays) else empty
        return cls(flat.astype(empty.dtype, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.flat[self.offsets[i]:self.offsets[i + 1]]


@dataclass(frozen=True, slots=True)
class CocoImage:
    """One image of the json: its id, file name (relative to the image folder) and size."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass
class CocoSet:
    """A COCO-format detection set, read once. Per image i: ``boxes[i]`` (n_i, 4) float32 XYXY in
    absolute pixels of the stored image; ``labels[i]`` (n_i,) int64 contiguous 0..C-1 (index into
    ``categories``, sorted by category id); ``iscrowd[i]`` (n_i,) bool; ``areas[i]`` (n_i,)
    float32, the json's ``area`` (the mask's area in COCO, which COCOeval's small / medium / large
    ranges use; w * h where the json has none). ``segmentations[i]``: the json's
    ``segmentation`` of each kept box (a list of polygons, or an RLE dict; None where absent),
    only when read with ``with_segmentation=True``. ``dropped``: the boxes of zero width or height
    left out."""

    annotation_file: Path
    image_root: Path
    images: list[CocoImage]
    categories: list[dict]
    boxes: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    iscrowd: Sequence[np.ndarray]
    areas: Sequence[np.ndarray] | None = None
    segmentations: list[list] | None = field(default=None, repr=False)
    dropped: int = 0

    def __post_init__(self) -> None:
        self.annotation_file, self.image_root = Path(self.annotation_file), Path(self.image_root)
        self._category_ids = np.array([int(c["id"]) for c in self.categories], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def category_id(self, label: int) -> int:
        """The json category id of contiguous label ``label``."""
        return int(self._category_ids[label])

    def category_ids(self, labels: np.ndarray) -> np.ndarray:
        """The json category ids of an array of contiguous labels (int64, same shape)."""
        return self._category_ids[np.asarray(labels, dtype=np.int64)]

    def image_path(self, i: int) -> Path:
        return self.image_root / self.images[i].file_name

    def area(self, i: int) -> np.ndarray:
        """``areas[i]``, or the boxes' w * h where the set has no areas (float32 (n_i,))."""
        if self.areas is not None:
            return np.asarray(self.areas[i], dtype=np.float32)
        b = np.asarray(self.boxes[i], dtype=np.float32)
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def __len__(self) -> int:
        return len(self.images)


# -- reading --------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path} does not exist (expected a COCO-format annotation json)")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: "
                        f"{e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read ({e})") from e


def _need(obj: Any, keys: Sequence[str], what: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} is not a JSON object: {str(obj)[:80]}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{path}: {what} has no {', '.join(repr(k) for k in missing)} "
                        f"(it has {sorted(obj)[:12]})")


def _scan_names(folder: Path) -> set[str] | None:
    try:
        return {e.name for e in os.scandir(folder) if not e.is_dir()}
    except OSError:
        return None


def read_coco(annotation_file: str | Path, image_root: str | Path, *, skip_empty: bool = False,
              check_files: bool = True, strict: bool = False,
              tolerance: float = DEFAULT_TOLERANCE,
              with_segmentation: bool = False) -> CocoSet:
    """Read a COCO-format annotation json (COCO 2017 instances, or the MLPerf OpenImages subset).

    ``skip_empty``: leave out images with no box (what the references do for training).
    ``check_files``: every image file must exist under ``image_root``. ``strict``: boxes of zero
    width or height, and boxes overhanging their image at all, are errors (by default the first
    are dropped and the second clipped, within ``tolerance`` pixels). ``with_segmentation``: keep
    each annotation's ``segmentation``. Raises DataError naming the file on any bad input.
    """
    path, root = Path(annotation_file), Path(image_root)
    data = _load_json(path)
    _need(data, ("images", "annotations", "categories"), "the top level", path)
    raw_images, raw_anns, raw_cats = data["images"], data["annotations"], data["categories"]
    for key, value in (("images", raw_images), ("annotations", raw_anns),
                       ("categories", raw_cats)):
        if not isinstance(value, list):
            raise DataError(f"{path}: {key!r} is not a list")
    if not raw_cats:
        raise DataError(f"{path}: 'categories' is empty")

    # categories, sorted by id: contiguous labels
    cats = []
    for c in raw_cats:
        _need(c, ("id",), "a category", path)
        cats.append({"id": int(c["id"]), "name": str(c.get("name", c["id"]))})
    cats.sort(key=lambda c: c["id"])
    cat_ids = np.array([c["id"] for c in cats], dtype=np.int64)
    if len(np.unique(cat_ids)) != len(cat_ids):
        dup = cat_ids[1:][np.diff(cat_ids) == 0][0]
        raise DataError(f"{path}: category id {dup} appears more than once")

    # images and annotations: a fast pass of comprehensions, and where it trips, a slow pass
    # that finds the entry at fault and names it
    try:
        images = [CocoImage(int(im["id"]), str(im["file_name"]), int(im["width"]),
                            int(im["height"])) for im in raw_images]
    except (KeyError, TypeError, ValueError):
        images = _images_slowly(raw_images, path)
    image_ids = np.array([im.id for im in images], dtype=np.int64)
    sizes = np.array([(im.width, im.height) for im in images], dtype=np.int64).reshape(-1, 2)
    if (sizes <= 0).any():
        im = images[int(np.flatnonzero((sizes <= 0).any(axis=1))[0])]
        raise DataError(f"{path}: image {im.id} ({im.file_name}) has size "
                        f"{im.width}x{im.height}")
    by_id = np.argsort(image_ids, kind="stable")
    sorted_ids = image_ids[by_id]
    if len(sorted_ids) > 1 and (np.diff(sorted_ids) == 0).any():
        dup = int(sorted_ids[1:][np.diff(sorted_ids) == 0][0])
        names = [im.file_name for im in images if im.id == dup]
        raise DataError(f"{path}: image id {dup} appears more than once ({names[0]} and "
                        f"{names[1]})")

    n = len(raw_anns)
    try:
        ann_img = np.array([a["image_id"] for a in raw_anns], dtype=np.int64).reshape(n)
        ann_cat = np.array([a["category_id"] for a in raw_anns], dtype=np.int64).reshape(n)
        xywh = np.array([a["bbox"] for a in raw_anns], dtype=np.float64).reshape(n, 4)
        ann_ids = np.array([a.get("id", k + 1) for k, a in enumerate(raw_anns)],
                           dtype=np.int64).reshape(n)
        area = np.array([a.get("area") if a.get("area") is not None else np.nan
                         for a in raw_anns], dtype=np.float64).reshape(n)
        crowd = np.array([bool(a["iscrowd"]) if "iscrowd" in a else bool(a.get("IsGroupOf", 0))
                          for a in raw_anns], dtype=bool).reshape(n)
    except (KeyError, TypeError, ValueError, AttributeError):
        _annotations_slowly(raw_anns, path)  # raises, naming the annotation
        raise
    pos = np.searchsorted(sorted_ids, ann_img)
    found = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)]
                                       == ann_img) if len(sorted_ids) else np.zeros(n, bool)
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        raise DataError(f"{path}: annotation {ann_ids[k]} refers to image {ann_img[k]}, which "
                        f"is not in 'images' ({int((~found).sum())} such annotation(s))")
    img_idx = by_id[pos] if n else np.zeros(0, dtype=np.int64)

    def bad(mask: np.ndarray, why: str) -> None:
        if mask.any():
            k = int(np.flatnonzero(mask)[0])
            im = images[img_idx[k]]
            raise DataError(f"{path}: annotation {ann_ids[k]} (image {im.id}, {im.file_name}, "
                            f"{im.width}x{im.height}) has bbox {xywh[k].tolist()}: {why} "
                            f"({int(mask.sum())} such annotation(s))")

    bad(~np.isfinite(xywh).all(axis=1), "not finite")
    bad((xywh[:, 2] < 0) | (xywh[:, 3] < 0), "negative width or height")
    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    if strict:
        bad(degenerate, "zero width or height")
    label = np.searchsorted(cat_ids, ann_cat)
    unknown = (label >= len(cat_ids)) | (cat_ids[np.minimum(label, len(cat_ids) - 1)] != ann_cat)
    if unknown.any():
        k = int(np.flatnonzero(unknown)[0])
        raise DataError(f"{path}: annotation {ann_ids[k]} has category_id {ann_cat[k]}, which is "
                        f"not in 'categories' ({int(unknown.sum())} such annotation(s))")
    widths = np.array([im.width for im in images], dtype=np.float64)[img_idx]
    heights = np.array([im.height for im in images], dtype=np.float64)[img_idx]
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    tol = 0.0 if strict else float(tolerance)
    bad((xyxy[:, 0] < -tol) | (xyxy[:, 1] < -tol) | (xyxy[:, 2] > widths + tol)
        | (xyxy[:, 3] > heights + tol), f"outside its image (by more than {tol:g} px)")
    np.clip(xyxy[:, 0::2], 0, widths[:, None], out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, heights[:, None], out=xyxy[:, 1::2])
    area = np.where(np.isnan(area), xywh[:, 2] * xywh[:, 3], area)

    keep = ~degenerate
    if keep.all():
        order = np.argsort(img_idx, kind="stable")
    else:
        order = np.flatnonzero(keep)[np.argsort(img_idx[keep], kind="stable")]
    counts = np.bincount(img_idx[order], minlength=len(images))
    if skip_empty:
        kept_images = np.flatnonzero(counts > 0)
        images = [images[i] for i in kept_images]
        counts = counts[kept_images]
    offsets = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    segs = None
    if with_segmentation:
        flat = [raw_anns[k].get("segmentation") for k in order.tolist()]
        segs = [flat[offsets[i]:offsets[i + 1]] for i in range(len(images))]

    if check_files:
        _check_files(path, root, images)
    return CocoSet(
        annotation_file=path, image_root=root, images=images, categories=cats,
        boxes=Ragged(xyxy[order].astype(np.float32), offsets),
        labels=Ragged(label[order].astype(np.int64), offsets),
        iscrowd=Ragged(crowd[order], offsets),
        areas=Ragged(area[order].astype(np.float32), offsets),
        segmentations=segs, dropped=int(degenerate.sum()))


def _images_slowly(raw_images: list, path: Path) -> list[CocoImage]:
    images = []
    for im in raw_images:
        _need(im, ("id", "file_name", "width", "height"), "an image", path)
        try:
            images.append(CocoImage(int(im["id"]), str(im["file_name"]), int(im["width"]),
                                    int(im["height"])))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: image {str(im)[:120]} has a bad field ({e})") from e
    return images


def _annotations_slowly(raw_anns: list, path: Path) -> None:
    """Find the annotation the fast pass tripped on and raise a DataError naming it."""
    for k, a in enumerate(raw_anns):
        _need(a, ("image_id", "category_id", "bbox"), f"annotation {k}", path)
        name = a.get("id", k)
        bbox = a["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DataError(f"{path}: annotation {name} has bbox {bbox!r} (expected "
                            "[x, y, w, h])")
        try:
            [float(v) for v in bbox]
            int(a["image_id"]), int(a["category_id"]), int(a.get("id", k + 1))
            float(a["area"]) if a.get("area") is not None else None
            bool(a.get("iscrowd", a.get("IsGroupOf", 0)))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: annotation {name} has a bad field ({e})") from e
    raise DataError(f"{path}: the annotations cannot be read (no single annotation at fault)")


def _check_files(path: Path, root: Path, images: list[CocoImage]) -> None:
    if not root.is_dir():
        raise DataError(f"{root} does not exist (the image folder of {path})")
    names = _scan_names(root)
    missing = []
    for im in images:
        # one listing of the folder answers flat names; a name with a folder in it is looked up
        ok = (im.file_name in names) if names is not None and "/" not in im.file_name \
            else (root / im.file_name).is_file()
        if not ok:
            missing.append(im.file_name)
    if missing:
        raise DataError(f"{root / missing[0]} is missing: {len(missing)} of the {len(images)} "
                        f"images of {path} are not in {root}")


# -- writing --------------------------------------------------------------------------------------
def write_coco(path: str | Path, images: list[CocoImage], annotations: list[dict],
               categories: list[dict]) -> None:
    """Write a COCO-format json. ``annotations``: dicts with "id", "image_id", "category_id",
    "bbox" ([x, y, w, h] in pixels), "area", "iscrowd" and optionally "segmentation" (a list of
    polygons [x0, y0, x1, y1, ...]); written as given, in this order. The folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "info": {"description": "mlperf_fast COCO-format detection set"},
        "licenses": [],
        "images": [{"id": int(im.id), "file_name": im.file_name, "width": int(im.width),
                    "height": int(im.height)} for im in images],
        "annotations": [_plain(a) for a in annotations],
        "categories": [{"id": int(c["id"]), "name": str(c["name"]),
                        "supercategory": str(c.get("supercategory", "object"))}
                       for c in categories],
    }
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """JSON-ready copies of numpy scalars and arrays."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- decoding and the Dataset ---------------------------------------------------------------------
_TORCHVISION_DECODE: bool | None = None


def decode_rgb(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Decode a JPEG (or any image Pillow reads) to uint8 (3, H, W) RGB. torchvision's decoder
    first (grayscale and CMYK JPEGs come out RGB); Pillow when torchvision cannot (its decoding is
    deprecated from 0.29 on) or fails on this file. DataError naming ``name`` if neither can."""
    global _TORCHVISION_DECODE
    if _TORCHVISION_DECODE is None:
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
            _TORCHVISION_DECODE = True
        except Exception:  # noqa: BLE001 - any failure to import means: use Pillow
            _TORCHVISION_DECODE = False
    if _TORCHVISION_DECODE and data[:2] == b"\xff\xd8":
        try:
            from torchvision.io import ImageReadMode, decode_jpeg

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                img = decode_jpeg(buf, mode=ImageReadMode.RGB)
        except Exception:  # noqa: BLE001 - Pillow may still read what torchvision refuses
            img = None
        if img is not None and img.ndim == 3 and img.shape[0] == 3:
            return img
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # Pillow raises many kinds on a corrupt file
        raise DataError(f"{name} is not a readable image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class DetectionDataset(torch.utils.data.Dataset):
    """(image, target) with image a uint8 tensor (3, H, W) (decoded JPEG, RGB) and target
    {"boxes": (n,4) float32 XYXY px, "labels": (n,) int64, "iscrowd": (n,) bool,
    "image_id": int, "orig_size": (H, W)}, after ``transform(image, target)`` if given.
    A file whose decoded size differs from the json's is a DataError (its boxes would be wrong).
    """

    def __init__(self, coco: CocoSet,
                 transform: Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]] | None
                 = None) -> None:
        self.coco, self.transform = coco, transform

    def __len__(self) -> int:
        return len(self.coco)

    def load_image(self, i: int) -> torch.Tensor:
        path = self.coco.image_path(i)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"{path} cannot be read ({e})") from e
        img = decode_rgb(data, str(path))
        im = self.coco.images[i]
        if tuple(img.shape[1:]) != (im.height, im.width):
            raise DataError(f"{path} is {img.shape[2]}x{img.shape[1]} but "
                            f"{self.coco.annotation_file} says {im.width}x{im.height}")
        return img

    def target(self, i: int) -> dict:
        im = self.coco.images[i]
        return {"boxes": torch.from_numpy(np.array(self.coco.boxes[i], dtype=np.float32)),
                "labels": torch.from_numpy(np.array(self.coco.labels[i], dtype=np.int64)),
                "iscrowd": torch.from_numpy(np.array(self.coco.iscrowd[i], dtype=bool)),
                "image_id": im.id, "orig_size": (im.height, im.width)}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, target = self.load_image(i), self.target(i)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) XYXY -> (n, 4) XYWH (same dtype)."""
    b = np.asarray(boxes)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
