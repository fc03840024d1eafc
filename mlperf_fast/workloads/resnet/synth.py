"""The embedded data set: JPEG files of ten procedurally drawn shape classes in ImageNet's
ImageFolder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), generated from a seed into
the verified cache and read back by data.py's reader like ImageNet itself.

Each image is one shape on a textured background: a disc, ring, square, triangle, cross, star,
striped square, checkered square, ellipse or crescent, at a random position, scale and
rotation. Foreground and background colours are drawn from the same distribution for every
class (only a minimum contrast between them is kept, so that the shape stays visible); the
background is a gradient with low-frequency blotches, and every pixel gets noise. Colour and
position say nothing about the class, and the classes differ in outline (square / triangle /
star / cross), topology (disc / ring / crescent), elongation (disc / ellipse) or inner texture
(square / stripes / checker): a small CNN learns them, a linear model on the pixels cannot.

Image sides are drawn independently from ``sizes`` (64 to 96 pixels by default), so the
pipeline's crops and resizes see varied, non-square inputs. Masks are drawn at twice the size and
reduced (anti-aliased edges); files are written as JPEG at quality 90, as ImageNet's are. The
validation split draws from its own random streams: no image is in both.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

#: bump when the generator's output changes (part of the cache key)
VERSION = 1
SHAPES = ("disc", "ring", "square", "triangle", "cross", "star", "stripes", "checker",
          "ellipse", "crescent")
_SUPER = 2  # masks are drawn at this multiple of the image size, then reduced
_SPLIT_STREAM = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SynthSettings:
    """What the embedded set is. ``noise``: the per-pixel noise's standard deviation (0-255
    scale); ``min_contrast``: the least distance between the foreground colour and the
    background's mean colour (RGB, 0-255 scale)."""

    num_classes: int = 10
    train_per_class: int = 600
    val_per_class: int = 100
    sizes: tuple[int, ...] = (64, 72, 80, 88, 96)
    quality: int = 90
    noise: float = 10.0
    min_contrast: float = 90.0
    seed: int = 2022
    version: int = VERSION

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"synth: num_classes must be in 2..{len(SHAPES)}, got "
                             f"{self.num_classes}")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ValueError("synth: train_per_class and val_per_class must be >= 1")
        if not self.sizes or min(self.sizes) < 16:
            raise ValueError(f"synth: sizes must be sides >= 16 pixels, got {self.sizes}")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"synth: JPEG quality must be in 1..95, got {self.quality}")


def wnid(label: int) -> str:
    """The class folder of ``label``, named like ImageNet's synsets."""
    return f"n{label:08d}"


# -- drawing ------------------------------------------------------------------------------------
def _circle(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _regular(k: int, phase: float = math.pi / 2) -> np.ndarray:
    t = phase + np.arange(k) * 2 * math.pi / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _outline(shape: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The shape in a unit frame (it fits the unit disc): polygons to fill, polygons to clear."""
    if shape == "disc":
        return [_circle()], []
    if shape == "ring":
        return [_circle()], [_circle() * rng.uniform(0.5, 0.7)]
    if shape in ("square", "stripes", "checker"):
        return [_regular(4, math.pi / 4)], []
    if shape == "triangle":
        return [_regular(3)], []
    if shape == "cross":
        w = rng.uniform(0.24, 0.34)
        return [np.array([[-1, -w], [1, -w], [1, w], [-1, w]]),
                np.array([[-w, -1], [w, -1], [w, 1], [-w, 1]])], []
    if shape == "star":
        inner = rng.uniform(0.38, 0.5)
        pts = _regular(10) * np.where(np.arange(10) % 2, inner, 1.0)[:, None]
        return [pts], []
    if shape == "ellipse":
        return [_circle() * np.array([1.0, rng.uniform(0.35, 0.55)])], []
    if shape == "crescent":
        r, d = rng.uniform(0.75, 0.9), rng.uniform(0.35, 0.55)
        return [_circle()], [_circle() * r + np.array([d, 0.0])]
    raise ValueError(f"unknown shape {shape!r}")


def _pattern(shape: str, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray,
             radius: float, angle: float) -> np.ndarray | None:
    """The inner texture of the striped and checkered squares (1 where the foreground shows),
    in the shape's rotated frame; None for plain shapes."""
    if shape not in ("stripes", "checker"):
        return None
    period = radius * rng.uniform(0.4, 0.6)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * xs + s * ys) / period, (-s * xs + c * ys) / period
    phase = rng.uniform(0, 1)
    if shape == "stripes":
        return ((u + phase) % 1.0 < 0.5).astype(np.float32)
    return (((np.floor(u + phase) + np.floor(v + phase)) % 2) == 0).astype(np.float32)


def _mask(shape: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Coverage of the shape, float32 [height, width] in [0, 1]."""
    from PIL import Image, ImageDraw

    radius = rng.uniform(0.25, 0.42) * min(width, height)
    angle = rng.uniform(0, 2 * math.pi)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    fill, clear = _outline(shape, rng)
    k = _SUPER
    img = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(img)
    for polys, value in ((fill, 255), (clear, 0)):
        for p in polys:
            xy = (p * radius) @ rot.T + np.array([cx, cy])
            draw.polygon([tuple(q) for q in (xy * k).tolist()], fill=value)
    m = np.asarray(img, dtype=np.float32) / 255.0
    ys, xs = np.mgrid[0:height * k, 0:width * k].astype(np.float32) / k
    texture = _pattern(shape, rng, xs - cx, ys - cy, radius, angle)
    if texture is not None:
        m = m * texture
    # reduce by averaging k x k blocks: anti-aliased edges
    return m.reshape(height, k, width, k).mean(axis=(1, 3))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient between two colours with low-frequency blotches, float32 [height, width, 3]."""
    from PIL import Image

    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    g = (math.cos(t) * xs / width + math.sin(t) * ys / height)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6) * rng.uniform(0.0, 0.8)
    bg = a + (b - a) * g[..., None]
    cells = int(rng.integers(3, 7))
    blot = rng.normal(0, rng.uniform(8, 30), (cells, cells, 3)).astype(np.float32)
    blot = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(blot[..., c])).resize(
        (width, height), Image.BICUBIC)) for c in range(3)], axis=-1)
    return (bg + blot).astype(np.float32)


def draw(shape: str, rng: np.random.Generator, width: int, height: int, noise: float = 10.0,
         min_contrast: float = 90.0) -> np.ndarray:
    """One image of ``shape``: uint8 [height, width, 3] (RGB)."""
    bg = _background(rng, width, height)
    mean = bg.reshape(-1, 3).mean(axis=0)
    for _ in range(32):  # a foreground colour that stands out (the same rule for every class)
        fg = rng.uniform(0, 255, 3)
        if np.linalg.norm(fg - mean) >= min_contrast:
            break
    else:
        fg = np.where(mean > 127.5, 0.0, 255.0)
    alpha = _mask(shape, rng, width, height)[..., None]
    img = bg * (1 - alpha) + fg.astype(np.float32) * alpha
    img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of uint8 [H, W, 3] RGB pixels."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def image(settings: SynthSettings, split: str, label: int, index: int) -> bytes:
    """The JPEG of image ``index`` of class ``label`` in ``split``: a function of these and the
    settings alone."""
    rng = np.random.default_rng([settings.seed, _SPLIT_STREAM[split], label, index])
    width, height = (int(s) for s in rng.choice(settings.sizes, size=2))
    return encode_jpeg(draw(SHAPES[label], rng, width, height, settings.noise,
                            settings.min_contrast), settings.quality)


# -- the data set -------------------------------------------------------------------------------
def build_dataset(settings: SynthSettings, out_dir: str,
                  log: Callable[[str], None] = print) -> None:
    """Write ``out_dir/train/<wnid>/*.JPEG``, ``out_dir/val/<wnid>/*.JPEG`` and ``meta.json``
    (the settings, the counts and each class folder's shape)."""
    import time

    t0 = time.perf_counter()
    counts = {"train": settings.train_per_class, "val": settings.val_per_class}
    total = settings.num_classes * sum(counts.values())
    done = 0
    for split, per_class in counts.items():
        for label in range(settings.num_classes):
            folder = os.path.join(out_dir, split, wnid(label))
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                name = (f"{wnid(label)}_{i}.JPEG" if split == "train"
                        else f"synth_val_{label * per_class + i + 1:08d}.JPEG")
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(image(settings, split, label, i))
            done += per_class
        log(f"resnet: embedded images: {split} written ({done} of {total}, "
            f"{time.perf_counter() - t0:.1f} s)")
    meta = {"settings": asdict(settings),
            "train_images": settings.num_classes * settings.train_per_class,
            "val_images": settings.num_classes * settings.val_per_class,
            "classes": {wnid(k): SHAPES[k] for k in range(settings.num_classes)}}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def embedded_dataset(settings: SynthSettings, log: Callable[[str], None] = print) -> str:
    """The folder of the embedded data set of ``settings`` in the verified cache (built once,
    on rank 0 first when distributed)."""
    from mlperf_fast.data.cache import cached

    return cached("resnet", "shapes-synth", settings, lambda d: build_dataset(settings, d, log),
                  log=log, what="the embedded ResNet data set")


def read_meta(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "meta.json")) as f:
        return json.load(f)


def settings_for(num_classes: int, train_per_class: int, val_per_class: int,
                 **overrides) -> SynthSettings:
    """The settings of a configuration (``overrides``: any other SynthSettings field)."""
    return SynthSettings(num_classes=num_classes, train_per_class=train_per_class,
                         val_per_class=val_per_class, **overrides)
