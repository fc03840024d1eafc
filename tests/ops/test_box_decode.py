"""box_decode against torchvision's BoxCoder and a float64 reference.

Tolerances: float32 decoding differs from float64 by the rounding of a handful of operations and
of exp (Triton's exp is within 2 ulp); coordinates reach ~1,500 here, whose ulp is 1.2e-4, so
boxes agree within 1e-5 relative or 5e-4 absolute. float64: 1e-12 relative.
"""
from __future__ import annotations

import math

import pytest
import torch

from mlperf_fast.ops.box_decode import box_decode, box_decode_torch


@pytest.fixture
def dec_backend(backend):
    if backend.name == "native":
        pytest.skip("box_decode has Triton and torch backends")
    return backend


def make(gen, batch, n, device, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 800
    wh = 8 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 300
    anchors = torch.cat([xy, xy + wh], 1)
    codes = torch.randn(batch, n, 4, generator=gen, dtype=torch.float64) * 0.5
    codes[:, ::17, 2:] = 9.0  # above the clamp
    return codes.to(device, dtype), anchors.to(device, dtype)


def test_matches_torchvision_box_coder(dec_backend, rng_seed):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder

    gen = torch.Generator().manual_seed(rng_seed)
    codes, anchors = make(gen, 1, 3000, dec_backend.device)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        want = BoxCoder(weights).decode_single(codes[0], anchors)
        got = box_decode(codes[0], anchors, weights, backend=dec_backend.name)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-4)
        sizes = torch.tensor([[600.0, 700.0]], device=dec_backend.device)
        clipped = tv.ops.clip_boxes_to_image(want, (600, 700))
        got = box_decode(codes, anchors, weights, image_sizes=sizes, backend=dec_backend.name)[0]
        torch.testing.assert_close(got, clipped, rtol=1e-5, atol=5e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_batch_against_float64(dec_backend, dtype, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = dec_backend.device
    codes, anchors = make(gen, 3, 1001, d, dtype)
    per_image = anchors[None].expand(3, -1, -1).contiguous() + torch.arange(3, device=d)[:, None, None]
    sizes = torch.tensor([[500, 600], [800, 800], [1333, 1000]], device=d)
    for a in (anchors, per_image):
        for s in (None, sizes):
            got = box_decode(codes, a, (1.0, 2.0, 3.0, 4.0), 3.0, s, backend=dec_backend.name)
            want = box_decode_torch(codes.double(), a.double(), (1.0, 2.0, 3.0, 4.0), 3.0, s)
            assert got.dtype == dtype and got.shape == codes.shape
            rtol, atol = {torch.float32: (1e-5, 5e-4), torch.float64: (1e-12, 1e-9),
                          torch.float16: (1e-3, 1.0)}[dtype]  # float16: one rounding of ~1000
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)


def test_empty_and_non_contiguous(dec_backend, rng_seed):
    d = dec_backend.device
    assert box_decode(torch.zeros(0, 4, device=d), torch.zeros(0, 4, device=d),
                      backend=dec_backend.name).shape == (0, 4)
    gen = torch.Generator().manual_seed(rng_seed)
    codes, anchors = make(gen, 1, 200, d)
    c = codes[0].t().contiguous().t()  # column-major
    torch.testing.assert_close(box_decode(c, anchors, backend=dec_backend.name),
                               box_decode_torch(codes[0], anchors), rtol=1e-5, atol=5e-4)


def test_bad_inputs():
    c, a = torch.zeros(5, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="anchors"):
        box_decode(c, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="rel_codes"):
        box_decode(torch.zeros(5, 3), a)
    with pytest.raises(TypeError, match="anchors"):
        box_decode(c, a.long())
    with pytest.raises(ValueError, match="weights"):
        box_decode(c, a, (1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="image_sizes"):
        box_decode(c, a, image_sizes=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="backend"):
        box_decode(c, a, backend="native")
    assert math.isclose(box_decode(torch.zeros(1, 4), torch.tensor([[0.0, 0, 2, 4]]))[0, 2].item(), 2.0)
