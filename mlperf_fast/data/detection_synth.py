"""The embedded detection set: flat shapes and glyphs of several classes pasted onto crops of
natural photographs, written as JPEG files with a COCO-format json (boxes, areas and polygon
masks), in either of the layouts the detection benchmarks read (``coco.openimages_paths`` or
``coco.coco2017_paths``), generated from a seed into the verified cache.

**Objects.** Twelve classes that differ in outline or topology: disc, square, triangle, star,
cross, ring, hexagon, crescent, arrow, the glyphs L and T, and a diamond with a square hole.
Each object gets its own colour (kept away from its background's colour), size, aspect,
rotation, a light shading gradient, and a place; objects drawn later hide parts of earlier
ones. A placement that would leave an earlier object less than ``min_visible`` of its pixels
(or fewer than ``min_pixels``) is drawn again elsewhere, or left out: every object drawn is
labelled, and none is mostly hidden.

**Labels.** Masks are binary (no anti-aliasing), so they are exact: an object's box, area and
polygons are those of its *visible* pixels, recomputed after every later object is drawn. The
polygons follow pixel edges (a pixel (r, c) is the square [c, c + 1] x [r, r + 1]), one hole-free
polygon per vertical chain of pixel runs, so that pycocotools' rasterization of the json's
``segmentation`` gives back exactly the visible mask (the tests check it), holes and
disconnected pieces included.

**Backgrounds.** Random crops (random scale, place and mirror) of the photographs bundled in the
scikit-image wheel (``skimage.data`` functions that read files in the wheel, never a download);
grayscale ones become gray RGB, as real grayscale JPEGs do once decoded.

The train and validation splits draw from separate random streams, each image from its own
(``seed``, split, index) stream, so a set is the same bytes whenever it is built (with the same
Pillow and scikit-image; their versions are part of the cache key).
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlperf_fast.data.coco import CocoImage, coco2017_paths, openimages_paths, write_coco

#: bump when the generator's output changes (part of the cache key)
VERSION = 1
SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent", "arrow",
          "glyph_L", "glyph_T", "holed_diamond")
LAYOUTS = ("openimages", "coco2017")
#: skimage.data photographs that load from files inside the wheel (no download); checked offline
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "stereo_motorcycle", "camera", "coins", "moon",
          "grass", "gravel", "brick")
_SPLIT_STREAM = {"train": 0, "val": 1}


@dataclass(frozen=True)
class DetectionSynthSettings:
    """What the embedded set is.

    ``size``: (H, W) of every image, or ((H_min, H_max), (W_min, W_max)) drawn per image
    (inclusive). Objects per image: ``min_objects``..``max_objects`` attempted (a few may be left
    out, see the module's docstring). ``scale``: an object's extent (its circumradius times 2)
    as a fraction of the image's shorter side. ``aspect``: the largest width / height stretch.
    """

    num_classes: int = 8
    train_images: int = 2000
    val_images: int = 250
    size: tuple = (128, 128)
    min_objects: int = 1
    max_objects: int = 6
    scale: tuple[float, float] = (0.15, 0.6)
    aspect: float = 1.6
    min_visible: float = 0.5
    min_pixels: int = 24
    noise: float = 4.0
    min_contrast: float = 80.0
    quality: int = 90
    seed: int = 2024
    version: int = VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"detection synth: num_classes must be in 1..{len(SHAPES)}, got "
                             f"{self.num_classes}")
        if self.train_images < 1 or self.val_images < 1:
            raise ValueError("detection synth: train_images and val_images must be >= 1")
        if not 0 <= self.min_objects <= self.max_objects or self.max_objects < 1:
            raise ValueError(f"detection synth: need 0 <= min_objects <= max_objects, >= 1; got "
                             f"{self.min_objects}, {self.max_objects}")
        (h0, h1), (w0, w1) = _size_ranges(self.size)
        if min(h0, w0) < 32 or h1 < h0 or w1 < w0:
            raise ValueError(f"detection synth: size must be (H, W) or ((H_min, H_max), "
                             f"(W_min, W_max)) with sides >= 32, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"detection synth: scale must be 0 < lo <= hi <= 1, got "
                             f"{self.scale}")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"detection synth: JPEG quality must be in 1..95, got "
                             f"{self.quality}")


def _size_ranges(size) -> tuple[tuple[int, int], tuple[int, int]]:
    try:
        if len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size):
            return (int(size[0]), int(size[0])), (int(size[1]), int(size[1]))
        (h0, h1), (w0, w1) = size
        return (int(h0), int(h1)), (int(w0), int(w1))
    except (TypeError, ValueError):
        raise ValueError(f"detection synth: size must be (H, W) or ((H_min, H_max), "
                         f"(W_min, W_max)), got {size!r}") from None


def category_ids(num_classes: int, layout: str) -> list[int]:
    """The json category ids of the classes: 0-based and contiguous in the OpenImages layout
    (the MLPerf json's 264 classes are used as labels directly), 1-based with gaps in the COCO
    layout (as COCO's 80 classes are numbered 1..90), so the contiguous mapping is exercised."""
    if layout == "openimages":
        return list(range(num_classes))
    return [1 + k + k // 3 for k in range(num_classes)]


# -- backgrounds ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The bundled photographs as uint8 (H, W, 3) RGB arrays (loaded once per process)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        if isinstance(a, tuple):  # stereo_motorcycle: (left, right, disparity)
            a = a[0]
        a = np.asarray(a)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(a[..., :3].astype(np.uint8)))
    return tuple(out)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random photograph, resized to (h, w): float32 (h, w, 3)."""
    from PIL import Image

    ph = photos()
    src = ph[int(rng.integers(len(ph)))]
    sh, sw = src.shape[:2]
    # the crop's side: between the output's and the photo's, so crops are never blown up much
    s = rng.uniform(0.25, 1.0)
    ch = max(8, round(min(sh, max(h, s * sh))))
    cw = max(8, round(min(sw, ch * w / h)))
    ch = min(ch, sh)
    y0 = int(rng.integers(0, sh - ch + 1))
    x0 = int(rng.integers(0, sw - cw + 1))
    # reducing_gap: shrink by whole factors first (much faster, visually the same)
    crop = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BILINEAR,
                                                                 reducing_gap=2.0)
    arr = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return arr


# -- shapes ---------------------------------------------------------------------------------------
def _regular(k: int, phase: float = math.pi / 2, n: int | None = None) -> np.ndarray:
    t = phase + np.arange(n or k) * 2 * math.pi / (n or k)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _outline(shape: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The shape in a unit frame (inside the unit disc): polygons to fill, polygons to clear."""
    circle = _regular(40)
    if shape == "disc":
        return [circle], []
    if shape == "square":
        return [_regular(4, math.pi / 4)], []
    if shape == "triangle":
        return [_regular(3)], []
    if shape == "star":
        inner = rng.uniform(0.38, 0.5)
        return [_regular(10) * np.where(np.arange(10) % 2, inner, 1.0)[:, None]], []
    if shape == "cross":
        a = rng.uniform(0.22, 0.32)
        return [np.array([[-1, -a], [1, -a], [1, a], [-1, a]]) * 0.95,
                np.array([[-a, -1], [a, -1], [a, 1], [-a, 1]]) * 0.95], []
    if shape == "ring":
        return [circle], [circle * rng.uniform(0.45, 0.6)]
    if shape == "hexagon":
        return [_regular(6)], []
    if shape == "crescent":
        return [circle], [circle * rng.uniform(0.75, 0.85) + np.array([rng.uniform(0.35, 0.5),
                                                                       0.0])]
    if shape == "arrow":
        s = rng.uniform(0.2, 0.3)
        return [np.array([[-1, -s], [0.1, -s], [0.1, -0.7], [1, 0], [0.1, 0.7], [0.1, s],
                          [-1, s]]) * 0.95], []
    if shape == "glyph_L":
        t = rng.uniform(0.3, 0.42)
        return [np.array([[-0.6, -0.85], [-0.6 + t, -0.85], [-0.6 + t, 0.85 - t], [0.6, 0.85 - t],
                          [0.6, 0.85], [-0.6, 0.85]])], []
    if shape == "glyph_T":
        t = rng.uniform(0.28, 0.38)
        return [np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, -0.75 + t], [t / 2, -0.75 + t],
                          [t / 2, 0.85], [-t / 2, 0.85], [-t / 2, -0.75 + t],
                          [-0.75, -0.75 + t]])], []
    if shape == "holed_diamond":
        return [_regular(4, 0.0)], [_regular(4, 0.0) * rng.uniform(0.35, 0.5)]
    raise ValueError(f"unknown shape {shape!r}")


def _rasterize(fill: list[np.ndarray], clear: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Binary mask (h, w) of the polygons (image coordinates) to fill, minus those to clear."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for polys, value in ((fill, 1), (clear, 0)):
        for p in polys:
            draw.polygon([tuple(q) for q in p.tolist()], fill=value)
    return np.asarray(img, dtype=bool)


def _object_mask(shape: str, rng: np.random.Generator, h: int, w: int,
                 settings: DetectionSynthSettings) -> np.ndarray:
    radius = 0.5 * rng.uniform(*settings.scale) * min(h, w)
    stretch = math.exp(rng.uniform(-1, 1) * math.log(settings.aspect) / 2)
    angle = rng.uniform(0, 2 * math.pi)
    # the centre may sit up to half a radius from the border: truncated objects occur
    cx = rng.uniform(0.5 * radius, w - 0.5 * radius)
    cy = rng.uniform(0.5 * radius, h - 0.5 * radius)
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c * stretch, -s / stretch], [s * stretch, c / stretch]]) * radius
    fill, clear = _outline(shape, rng)
    shift = np.array([cx, cy])
    return _rasterize([p @ m.T + shift for p in fill], [p @ m.T + shift for p in clear], h, w)


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons along pixel edges whose union is exactly ``mask`` (bool (H, W)): COCO
    ``segmentation`` lists [x0, y0, x1, y1, ...]. One hole-free polygon per vertical chain of
    row runs (a run that meets exactly one run in the row above, which meets only it, continues
    that chain), so holes and separate pieces need no special case."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = np.zeros((y1 - y0, x1 - x0 + 2), dtype=np.int8)
    sub[:, 1:-1] = mask[y0:y1, x0:x1]
    edges = np.diff(sub, axis=1)
    starts_r, starts_c = np.nonzero(edges == 1)
    _, ends_c = np.nonzero(edges == -1)
    # runs per row, in order (np.nonzero walks rows in order, columns ascending)
    bounds = np.searchsorted(starts_r, np.arange(y1 - y0 + 1))
    chains: list[list[tuple[int, int, int]]] = []  # each: [(row, start, end), ...]
    prev: list[tuple[int, int, int]] = []  # (start, end, chain index) of the previous row
    for r in range(y1 - y0):
        runs = list(zip(starts_c[bounds[r]:bounds[r + 1]].tolist(),
                        ends_c[bounds[r]:bounds[r + 1]].tolist()))
        cur = []
        for a, b in runs:
            above = [p for p in prev if p[0] < b and a < p[1]]
            chain = -1
            if len(above) == 1:
                pa, pb, pc = above[0]
                below = [1 for c, d in runs if c < pb and pa < d]
                if len(below) == 1:
                    chain = pc
            if chain < 0:
                chain = len(chains)
                chains.append([])
            chains[chain].append((r, a, b))
            cur.append((a, b, chain))
        prev = cur
    out = []
    for ch in chains:
        left, right = [], []
        for r, a, b in ch:
            left += [(a, r), (a, r + 1)]
            right += [(b, r), (b, r + 1)]
        pts = np.array(left + right[::-1], dtype=np.float64)
        # drop the vertices that lie on a straight line between their neighbours
        prv, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        cross = (pts[:, 0] - prv[:, 0]) * (nxt[:, 1] - pts[:, 1]) \
            - (pts[:, 1] - prv[:, 1]) * (nxt[:, 0] - pts[:, 0])
        dup = (pts == prv).all(axis=1)
        pts = pts[(cross != 0) & ~dup]
        pts += np.array([x0, y0], dtype=np.float64)
        out.append(pts.reshape(-1).tolist())
    return out


# -- one image ------------------------------------------------------------------------------------
def _pick_colour(rng: np.random.Generator, mean: np.ndarray, min_contrast: float) -> np.ndarray:
    for _ in range(32):  # a colour that stands out from the background here (same rule for all)
        fg = rng.uniform(0, 255, 3)
        if np.linalg.norm(fg - mean) >= min_contrast:
            return fg
    return np.where(mean > 127.5, 0.0, 255.0)


def render(settings: DetectionSynthSettings, split: str, index: int
           ) -> tuple[np.ndarray, list[dict]]:
    """Image ``index`` of ``split``: uint8 (H, W, 3) RGB pixels and its objects, each
    {"label": contiguous class, "mask": bool (H, W) visible pixels, "drawn": the pixels it had
    when it was drawn, before later objects hid some}. A function of the settings,
    the split and the index alone."""
    rng = np.random.default_rng([settings.seed, _SPLIT_STREAM[split], index])
    (h0, h1), (w0, w1) = _size_ranges(settings.size)
    h, w = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
    img = _background(rng, h, w)
    wanted = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    labels: list[int] = []
    visible: list[np.ndarray] = []
    full_area: list[int] = []
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(wanted):
        label = int(rng.integers(settings.num_classes))
        for _attempt in range(4):
            m = _object_mask(SHAPES[label], rng, h, w, settings)
            area = int(m.sum())
            if area < settings.min_pixels:
                continue
            # would this object hide too much of an earlier one?
            ok = all(int((v & ~m).sum()) >= max(settings.min_pixels, settings.min_visible * fa)
                     for v, fa in zip(visible, full_area))
            if ok:
                break
        else:
            continue
        visible = [v & ~m for v in visible]
        labels.append(label)
        visible.append(m)
        full_area.append(area)
        box_pixels = img[m]
        colour = _pick_colour(rng, box_pixels.mean(axis=0), settings.min_contrast)
        # a light shading gradient across the object, so that it is not one flat colour
        t = rng.uniform(0, 2 * math.pi)
        g = (math.cos(t) * xs[m] + math.sin(t) * ys[m]) / max(h, w)
        shade = rng.uniform(-40, 40) * (g - g.mean())
        img[m] = colour[None, :] + shade[:, None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(settings.noise)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return pixels, [{"label": k, "mask": v, "drawn": a}
                    for k, v, a in zip(labels, visible, full_area)]


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of uint8 (H, W, 3) RGB pixels."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def annotation(mask: np.ndarray) -> dict:
    """The COCO fields of a visible mask: "bbox" [x, y, w, h] (tight, pixel edges), "area"
    (its pixel count) and "segmentation" (pixel-edge polygons)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {"bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
            "area": int(mask.sum()), "segmentation": mask_polygons(mask)}


# -- the data set ---------------------------------------------------------------------------------
def _split_paths(root: Path, layout: str, split: str) -> tuple[Path, Path]:
    if layout == "openimages":
        return openimages_paths(root, "train" if split == "train" else "validation")
    if layout == "coco2017":
        return coco2017_paths(root, split)
    raise ValueError(f"detection synth: layout must be one of {LAYOUTS}, got {layout!r}")


def file_name(layout: str, image_id: int) -> str:
    """An image's file name, in the style of its layout (OpenImages: 16 hex digits; COCO: 12
    decimal digits)."""
    return f"{image_id:016x}.jpg" if layout == "openimages" else f"{image_id:012d}.jpg"


def write_detection_set(root: str | Path, settings: DetectionSynthSettings, layout: str,
                        log: Callable[[str], None] = print) -> None:
    """Write both splits of the set under ``root`` in ``layout`` ("openimages" or "coco2017"):
    the JPEG files, the json of each split, and ``meta.json`` (the settings and counts)."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"detection synth: layout must be one of {LAYOUTS}, got {layout!r}")
    ids = category_ids(settings.num_classes, layout)
    categories = [{"id": ids[k], "name": SHAPES[k], "supercategory": "shape"}
                  for k in range(settings.num_classes)]
    t0 = time.perf_counter()
    counts = {}
    for split, n in (("train", settings.train_images), ("val", settings.val_images)):
        folder, ann_file = _split_paths(root, layout, split)
        folder.mkdir(parents=True, exist_ok=True)
        images: list[CocoImage] = []
        anns: list[dict] = []
        for i in range(n):
            pixels, objects = render(settings, split, i)
            image_id = i + 1
            name = file_name(layout, image_id)
            with open(folder / name, "wb") as f:
                f.write(encode_jpeg(pixels, settings.quality))
            images.append(CocoImage(image_id, name, pixels.shape[1], pixels.shape[0]))
            for obj in objects:
                a = {"id": len(anns) + 1, "image_id": image_id,
                     "category_id": ids[obj["label"]], "iscrowd": 0, **annotation(obj["mask"])}
                if layout == "openimages":
                    a["IsGroupOf"] = 0  # the MLPerf json's iscrowd comes from IsGroupOf
                anns.append(a)
        write_coco(ann_file, images, anns, categories)
        counts[split] = {"images": n, "objects": len(anns)}
        log(f"detection synth: {split} written ({n} images, {len(anns)} objects, "
            f"{time.perf_counter() - t0:.1f} s)")
    with open(root / "meta.json", "w") as f:
        json.dump({"settings": asdict(settings), "layout": layout, "counts": counts,
                   "classes": [c["name"] for c in categories]}, f, indent=1)


def _cache_settings(settings: DetectionSynthSettings, layout: str) -> dict:
    import PIL
    import skimage

    # the photographs and the JPEG encoder come from these packages: a new version may change
    # the bytes, so it is a new artefact
    return {**asdict(settings), "layout": layout, "pillow": PIL.__version__,
            "skimage": skimage.__version__}


def embedded_detection_set(settings: DetectionSynthSettings, layout: str,
                           log: Callable[[str], None] = print) -> Path:
    """The root of the embedded set of ``settings`` in ``layout``, in the verified cache (built
    once, on rank 0 first when distributed): what ``openimages_paths`` / ``coco2017_paths``
    take."""
    from mlperf_fast.data.cache import cached

    if layout not in LAYOUTS:
        raise ValueError(f"detection synth: layout must be one of {LAYOUTS}, got {layout!r}")
    root = cached("detection", f"shapes-{layout}", _cache_settings(settings, layout),
                  lambda d: write_detection_set(d, settings, layout, log), log=log,
                  what=f"the embedded detection set ({layout})")
    return Path(root)


def read_meta(root: str | Path) -> dict:
    with open(os.path.join(root, "meta.json")) as f:
        return json.load(f)
