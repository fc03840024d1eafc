"""Box-aware image transforms of the detection benchmarks' CPU input paths, on CHW tensors
(uint8 or float) with (n, 4) XYXY boxes in absolute pixels. Every random draw comes from the
``torch.Generator`` passed in, so that a worker's augmentations are reproducible from its seed.

The SSD crop follows the SSD-ResNet34 reference (mlcommons/training
single_stage_detector/ssd/utils.py ``SSDCropping``, commit 04eb938, the SSD-ResNet34 code since
moved under retired_benchmarks/; NVIDIA's DALI training pipeline for SSD, ``COCOPipeline``, draws
the same way through ``RandomBBoxCrop(thresholds=[0, 0.1, 0.3, 0.5, 0.7, 0.9],
scaling=[0.3, 1.0], aspect_ratio=[0.5, 2.0], allow_no_crop=True, num_attempts=1)``):

- draw one of seven options uniformly: no crop; a minimum IoU of 0.1, 0.3, 0.5, 0.7 or 0.9; or
  no IoU constraint;
- draw the crop's width and height as fractions U(0.3, 1) of the image's; skip the window if
  w / h is outside [0.5, 2]; draw its left and top uniformly so that it fits;
- accept it if *every* box has IoU with the crop window above the minimum, and at least one box
  has its centre strictly inside; otherwise draw another window for the same option, up to
  ``attempts`` windows (the reference's ``num_cropping_iterations``, logged as ``max_samples``:
  1 by default, 50 in the v1.0 RCPs' runs), then draw the option again;
- keep the boxes whose centres are inside, clip them to the window, and shift them.

Where the reference measures boxes against the window in fractions and then cuts the image at
the truncated pixel bounds, this cuts first and measures against the pixel window it cut, so
the returned boxes are exact for the returned image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: the SSD crop's options: None = no crop; a float = the minimum IoU; -inf = any crop
SSD_CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, float("-inf"))
SSD_CROP_SCALE = (0.3, 1.0)
SSD_CROP_ASPECT = (0.5, 2.0)
#: draws after which the crop gives up and returns the image whole (the reference loops until
#: one succeeds; with 1/7 of the draws being "no crop" this is never reached in practice)
_MAX_DRAWS = 1000


def _check(image: torch.Tensor, boxes: torch.Tensor | None = None) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got "
                         f"{getattr(image, 'shape', type(image))}")
    if boxes is not None and (boxes.ndim != 2 or boxes.shape[1] != 4):
        raise ValueError(f"boxes must be (n, 4) XYXY, got {tuple(boxes.shape)}")


def _uniform(generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: image (C, H, W), boxes (n, 4) XYXY px -> x' = W - x (new tensors)."""
    _check(image, boxes)
    w = image.shape[-1]
    out = boxes.clone()
    out[:, 0] = w - boxes[:, 2]
    out[:, 2] = w - boxes[:, 0]
    return image.flip(-1), out


def resize(image: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size`` = (H, W), bilinear with antialiasing (as Pillow's resize is, which the
    references use); boxes scaled by (W' / W, H' / H). A uint8 image comes back uint8 (rounded),
    a float one in its dtype."""
    _check(image, boxes)
    h, w = image.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"resize: size must be positive (H, W), got {size}")
    if (oh, ow) == (h, w):
        out = image.clone()
    else:
        x = image.unsqueeze(0)
        x = x.float() if not x.is_floating_point() else x
        x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False,
                          antialias=True)[0]
        out = x.round().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 \
            else x.to(image.dtype)
    scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=boxes.dtype,
                         device=boxes.device)
    return out, boxes * scale


def box_iou_window(boxes: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """IoU of each box (n, 4) XYXY with one window (x0, y0, x1, y1): (n,) in boxes' dtype."""
    x0, y0, x1, y1 = window
    iw = (boxes[:, 2].clamp(max=x1) - boxes[:, 0].clamp(min=x0)).clamp(min=0)
    ih = (boxes[:, 3].clamp(max=y1) - boxes[:, 1].clamp(min=y0)).clamp(min=0)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (x1 - x0) * (y1 - y0) - inter)


def ssd_random_crop(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    generator: torch.Generator | None = None, attempts: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SSD reference's IoU-constrained random crop (see the module's docstring).

    image (C, H, W); boxes (n, 4) XYXY px; labels (n,) or (n, ...), indexed along with the boxes
    (pass a stacked tensor to carry more per-box fields); ``attempts`` >= 1 windows per drawn
    option. Returns the cropped image, the kept boxes clipped to it in its own pixel
    coordinates (float32 or boxes' float dtype), and their labels. An image without boxes is
    returned uncropped.
    """
    _check(image, boxes)
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but boxes {boxes.shape[0]}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
    h, w = image.shape[-2:]
    fboxes = boxes if boxes.is_floating_point() else boxes.float()
    n_opt = len(SSD_CROP_MIN_IOUS)
    for _ in range(_MAX_DRAWS):
        min_iou = SSD_CROP_MIN_IOUS[int(torch.randint(n_opt, (), generator=generator))]
        if min_iou is None or len(boxes) == 0:
            return image, boxes, labels
        for _ in range(attempts):
            window = _crop_window(fboxes, h, w, min_iou, generator)
            if window is None:
                continue
            l, t, r, b, keep = window
            kept = fboxes[keep].clone()
            kept[:, 0::2] = kept[:, 0::2].clamp(l, r) - l
            kept[:, 1::2] = kept[:, 1::2].clamp(t, b) - t
            return image[:, t:b, l:r], kept, labels[keep]
    return image, boxes, labels


def _crop_window(fboxes: torch.Tensor, h: int, w: int, min_iou: float,
                 generator: torch.Generator | None
                 ) -> tuple[int, int, int, int, torch.Tensor] | None:
    """One drawn window (left, top, right, bottom px and the kept boxes' mask), or None where
    it fails the aspect, IoU or centre test."""
    cw = _uniform(generator, *SSD_CROP_SCALE)
    ch = _uniform(generator, *SSD_CROP_SCALE)
    if not SSD_CROP_ASPECT[0] <= cw / ch <= SSD_CROP_ASPECT[1]:
        return None
    left = _uniform(generator, 0.0, 1.0 - cw)
    top = _uniform(generator, 0.0, 1.0 - ch)
    # the pixel window that is cut (the reference truncates the same way)
    l, t = int(left * w), int(top * h)
    r, b = int((left + cw) * w), int((top + ch) * h)
    if r <= l or b <= t:
        return None
    ious = box_iou_window(fboxes.double(), (l, t, r, b))
    if not bool((ious > min_iou).all()):
        return None
    xc = 0.5 * (fboxes[:, 0] + fboxes[:, 2])
    yc = 0.5 * (fboxes[:, 1] + fboxes[:, 3])
    keep = (xc > l) & (xc < r) & (yc > t) & (yc < b)
    if not bool(keep.any()):
        return None
    return l, t, r, b, keep


def _blend(a: torch.Tensor, b: torch.Tensor | float, ratio: float) -> torch.Tensor:
    return (ratio * a + (1.0 - ratio) * b).clamp(0.0, 1.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    # ITU-R 601-2 luma with torchvision's rgb_to_grayscale's rounding of the red weight
    return (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of a [0, 1] RGB image by ``shift`` turns (HSV round trip)."""
    r, g, b = x[0], x[1], x[2]
    maxc, _ = x.max(dim=0)
    minc, _ = x.min(dim=0)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    dz = delta.clamp(min=1e-12)
    rc, gc, bc = (maxc - r) / dz, (maxc - g) / dz, (maxc - b) / dz
    hh = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hh = torch.where(delta > 0, (hh / 6.0) % 1.0, torch.zeros_like(hh))
    hh = (hh + shift) % 1.0
    i = torch.floor(hh * 6.0)
    f = hh * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    sel = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (rr, gg, bb) in enumerate(sel):
        m = i == k
        out[0] = torch.where(m, rr, out[0])
        out[1] = torch.where(m, gg, out[1])
        out[2] = torch.where(m, bb, out[2])
    return out


def color_jitter(image: torch.Tensor, generator: torch.Generator | None = None,
                 brightness: float = 0.125, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.05) -> torch.Tensor:
    """torchvision ``ColorJitter``'s recipe (the SSD reference's, with its factors as defaults:
    single_stage_detector/ssd/utils.py ``SSDTransformer``): brightness, contrast and saturation
    factors drawn from U(1 - x, 1 + x), a hue shift from U(-hue, hue), applied in a random order.
    image: (3, H, W) uint8 (returned uint8, rounded) or float in [0, 1] (returned float)."""
    _check(image)
    if image.shape[0] != 3:
        raise ValueError(f"color_jitter needs an RGB (3, H, W) image, got {tuple(image.shape)}")
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    order = torch.randperm(4, generator=generator).tolist()
    fb = _uniform(generator, max(0.0, 1 - brightness), 1 + brightness)
    fc = _uniform(generator, max(0.0, 1 - contrast), 1 + contrast)
    fs = _uniform(generator, max(0.0, 1 - saturation), 1 + saturation)
    fh = _uniform(generator, -hue, hue)
    for op in order:
        if op == 0 and brightness > 0:
            x = _blend(x, 0.0, fb)
        elif op == 1 and contrast > 0:
            x = _blend(x, _gray(x).mean(), fc)
        elif op == 2 and saturation > 0:
            x = _blend(x, _gray(x), fs)
        elif op == 3 and hue > 0:
            x = _adjust_hue(x, fh)
    if image.dtype == torch.uint8:
        return (x * 255.0).round().clamp_(0, 255).to(torch.uint8)
    return x.to(image.dtype)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(image - mean) / std per channel, float32. A uint8 image is first divided by 255: ``mean``
    and ``std`` are on the [0, 1] scale (torchvision's ImageNet values, for example)."""
    _check(image)
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    if m.shape[0] not in (1, x.shape[0]) or s.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"normalize: mean and std need 1 or {x.shape[0]} values")
    if bool((s == 0).any()):
        raise ValueError("normalize: std must not be 0")
    return (x - m) / s
