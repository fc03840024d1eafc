"""box_iou against torchvision.ops.box_iou: bit-identical in float32 and float64 (same expression,
IEEE rounding, no contraction), so the comparison is exact."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.box_iou import box_iou, box_iou_torch


@pytest.fixture
def iou_backend(backend):
    if backend.name == "native":
        pytest.skip("box_iou has Triton and torch backends")
    return backend


def boxes(gen, n, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 200
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 80
    out = torch.cat([xy, xy + wh], 1)
    out[::7, 2] = out[::7, 0]  # zero-area boxes
    return out.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_matches_torchvision(iou_backend, dtype, rng_seed):
    tv = pytest.importorskip("torchvision")
    gen = torch.Generator().manual_seed(rng_seed)
    d = iou_backend.device
    for n, m in [(1, 1), (37, 301), (130, 65), (0, 5), (5, 0)]:
        a, b = boxes(gen, n, dtype).to(d), boxes(gen, m, dtype).to(d)
        got = box_iou(a, b, backend=iou_backend.name)
        want = tv.ops.box_iou(a, b)
        assert got.shape == (n, m) and got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32],
                         ids=["float32", "float64", "int32"])
def test_formats_match_torchvision(iou_backend, fmt, dtype, rng_seed):
    """torchvision's box_iou(fmt=...): the corners and areas formed from sizes as it forms them,
    so the results are bit-identical (integer boxes: the same float32 ratio)."""
    tv = pytest.importorskip("torchvision")
    gen = torch.Generator().manual_seed(rng_seed)
    d = iou_backend.device
    for n, m in [(1, 1), (37, 61), (0, 5)]:
        a, b = (boxes(gen, k, torch.float64) for k in (n, m))
        # (x1, y1, x2, y2) -> (x1, y1, w, h) or (cx, cy, w, h), then to the dtype under test
        a, b = (torch.cat([t[:, :2] if fmt == "xywh" else (t[:, :2] + t[:, 2:]) / 2,
                           t[:, 2:] - t[:, :2]], 1).to(dtype).to(d) for t in (a, b))
        got = box_iou(a, b, fmt, backend=iou_backend.name)
        want = tv.ops.box_iou(a, b, fmt=fmt)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_batched_and_half(iou_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = iou_backend.device
    a = torch.stack([boxes(gen, 50) for _ in range(3)]).to(d)
    b = torch.stack([boxes(gen, 70) for _ in range(3)]).to(d)
    got = box_iou(a, b, backend=iou_backend.name)
    for i in range(3):
        torch.testing.assert_close(got[i], box_iou_torch(a[i], b[i]), rtol=0, atol=0, equal_nan=True)
    h = box_iou(a.half(), b.half(), backend=iou_backend.name)
    # float16: one rounding of an IoU in [0, 1] (ulp 2^-11)
    torch.testing.assert_close(h.float(), box_iou_torch(a.half().float(), b.half().float()),
                               rtol=0, atol=5e-4, equal_nan=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="fmt"):
        box_iou(torch.zeros(3, 5), torch.zeros(3, 5), fmt="cxcywhr")
    with pytest.raises(ValueError, match="boxes2"):
        box_iou(torch.zeros(3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="boxes1"):
        box_iou(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="boxes2"):
        box_iou(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend"):
        box_iou(torch.zeros(3, 4), torch.zeros(3, 4), backend="native")
