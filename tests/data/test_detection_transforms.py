"""The detection transforms' box maths (flip twice is the identity, resize scales boxes, the SSD
crop's rules: kept boxes have their centre inside, are clipped, and every original box meets the
drawn minimum IoU), their reproducibility from a torch.Generator, and colour jitter and
normalization against torchvision's functional ops."""
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from mlperf_fast.data import detection_transforms as T


def _boxes(g: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    x0 = torch.rand(n, generator=g) * (w - 4)
    y0 = torch.rand(n, generator=g) * (h - 4)
    bw = 2 + torch.rand(n, generator=g) * (w - x0 - 2)
    bh = 2 + torch.rand(n, generator=g) * (h - y0 - 2)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)


def _image(g: torch.Generator, h: int = 60, w: int = 80) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_hflip_twice_is_identity():
    g = torch.Generator().manual_seed(0)
    img, boxes = _image(g), _boxes(g, 7, 60, 80)
    fi, fb = T.hflip(img, boxes)
    assert torch.equal(fi[..., 0], img[..., -1])
    torch.testing.assert_close(fb[:, [0, 2]], 80 - boxes[:, [2, 0]])
    torch.testing.assert_close(fb[:, [1, 3]], boxes[:, [1, 3]])
    assert (fb[:, 2] > fb[:, 0]).all()
    ii, bb = T.hflip(fi, fb)
    assert torch.equal(ii, img)
    torch.testing.assert_close(bb, boxes, rtol=0, atol=1e-5)
    # a box on one pixel column maps to the mirrored column
    _, one = T.hflip(img, torch.tensor([[3.0, 0, 4, 1]]))
    assert one.tolist() == [[76.0, 0, 77, 1]]


def test_resize_scales_boxes_and_pixels():
    g = torch.Generator().manual_seed(1)
    img, boxes = _image(g, 40, 50), _boxes(g, 5, 40, 50)
    out, ob = T.resize(img, boxes, (80, 25))
    assert out.shape == (3, 80, 25) and out.dtype == torch.uint8
    torch.testing.assert_close(ob, boxes * torch.tensor([0.5, 2.0, 0.5, 2.0]))
    # an object's pixels land inside its scaled box: a white block on black
    blk = torch.zeros(3, 40, 50, dtype=torch.uint8)
    blk[:, 10:20, 20:30] = 255
    out, ob = T.resize(blk, torch.tensor([[20.0, 10, 30, 20]]), (80, 100))
    ys, xs = torch.nonzero(out[0] > 127, as_tuple=True)
    assert (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1) == \
        tuple(int(v) for v in ob[0].tolist())
    # float images stay float, and agree with torchvision's antialiased resize
    f = img.float() / 255
    ours, _ = T.resize(f, boxes, (23, 31))
    theirs = TF.resize(f, [23, 31], antialias=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    same, sb = T.resize(img, boxes, (40, 50))
    assert torch.equal(same, img) and torch.equal(sb, boxes)


def _crop_window(img, out):
    """Recover the crop's pixel window from the output (unique since the image is random)."""
    h, w = out.shape[-2:]
    H, W = img.shape[-2:]
    for t in range(H - h + 1):
        for l in range(W - w + 1):
            if torch.equal(img[:, t:t + h, l:l + w], out):
                return l, t, l + w, t + h
    raise AssertionError("the output is not a crop of the input")


def test_ssd_crop_rules():
    g = torch.Generator().manual_seed(2)
    seen_ious = set()
    crops = 0
    for trial in range(200):
        img = _image(g, 48, 64)
        boxes = _boxes(g, 1 + trial % 5, 48, 64)
        labels = torch.arange(len(boxes))
        out, ob, ol = T.ssd_random_crop(img, boxes, labels, g)
        if out.shape == img.shape:  # no crop
            assert torch.equal(ob, boxes) and torch.equal(ol, labels)
            continue
        crops += 1
        l, t, r, b = _crop_window(img, out)
        # the crop's size rules: 0.3..1 of each side (to the pixel), aspect 0.5..2 of fractions
        assert (r - l) >= math.floor(0.3 * 64) - 1 and (b - t) >= math.floor(0.3 * 48) - 1
        xc, yc = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (xc > l) & (xc < r) & (yc > t) & (yc < b)
        assert inside.any() and torch.equal(ol, labels[inside])
        want = boxes[inside].clone()
        want[:, 0::2] = want[:, 0::2].clamp(l, r) - l
        want[:, 1::2] = want[:, 1::2].clamp(t, b) - t
        torch.testing.assert_close(ob, want)
        assert (ob[:, 0::2] >= 0).all() and (ob[:, 0::2] <= r - l).all()
        assert (ob[:, 1::2] >= 0).all() and (ob[:, 1::2] <= b - t).all()
        # every original box passes some minimum IoU; record the tightest it could have been
        ious = T.box_iou_window(boxes.double(), (l, t, r, b))
        seen_ious.add(max([m for m in (0.1, 0.3, 0.5, 0.7, 0.9) if (ious > m).all()],
                          default=-1))
    assert crops > 50  # "no crop" wins often: it ends the loop, a failed draw does not
    assert -1 in seen_ious and len(seen_ious) >= 3  # unconstrained and constrained crops


def test_ssd_crop_meets_each_min_iou(monkeypatch):
    # force each option in turn: the accepted crop has IoU above it with every box
    g = torch.Generator().manual_seed(3)
    for min_iou in (0.1, 0.3, 0.5, 0.7, 0.9):
        monkeypatch.setattr(T, "SSD_CROP_MIN_IOUS", (min_iou,))
        checked = 0
        for _ in range(20):
            img = _image(g, 50, 50)
            boxes = torch.tensor([[10.0, 10, 40, 45]])
            out, _, _ = T.ssd_random_crop(img, boxes, torch.tensor([1]), g)
            if out.shape == img.shape:
                continue  # it gave up (only possible for 0.9 on a hard box)
            l, t, r, b = _crop_window(img, out)
            assert T.box_iou_window(boxes.double(), (l, t, r, b)).item() > min_iou
            checked += 1
        assert checked >= (15 if min_iou < 0.9 else 1)


def test_ssd_crop_attempts_windows_per_drawn_option(monkeypatch):
    # num_cropping_iterations: a failed window is redrawn for the same option, up to attempts
    # windows, before the option is drawn again
    img = _image(torch.Generator().manual_seed(4))
    boxes = _boxes(torch.Generator().manual_seed(5), 4, 60, 80)
    monkeypatch.setattr(T, "SSD_CROP_MIN_IOUS", (0.5, 0.3))  # no "no crop" option
    real_randint = torch.randint
    fails = 3
    for attempts, options in ((1, 4), (2, 2), (5, 1)):
        windows, draws = [], []

        def window(fboxes, h, w, min_iou, generator):
            windows.append(min_iou)
            if len(windows) <= fails:
                return None
            return 0, 0, w, h, torch.ones(len(fboxes), dtype=torch.bool)

        def randint(*a, **k):
            draws.append(1)
            return real_randint(*a, **k)
        monkeypatch.setattr(T, "_crop_window", window)
        monkeypatch.setattr(T.torch, "randint", randint)
        out, ob, ol = T.ssd_random_crop(img, boxes, torch.arange(4),
                                        torch.Generator().manual_seed(1), attempts=attempts)
        monkeypatch.setattr(T.torch, "randint", real_randint)
        assert len(windows) == fails + 1 and len(draws) == options, attempts
        assert out.shape == img.shape and torch.equal(ol, torch.arange(4))
    monkeypatch.undo()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="attempts"):
            T.ssd_random_crop(img, boxes, torch.arange(4), attempts=bad)


def test_ssd_crop_reproducible_and_edge_cases():
    img = _image(torch.Generator().manual_seed(4))
    boxes = _boxes(torch.Generator().manual_seed(5), 4, 60, 80)
    labels = torch.tensor([[1, 0], [2, 1], [3, 0], [4, 1]])  # several fields per box
    runs = [T.ssd_random_crop(img, boxes, labels, torch.Generator().manual_seed(9))
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert runs[0][2].shape[1] == 2
    empty = torch.zeros(0, 4)
    out, ob, _ = T.ssd_random_crop(img, empty, torch.zeros(0), torch.Generator())
    assert out is img and ob.shape == (0, 4)
    with pytest.raises(ValueError, match="rows"):
        T.ssd_random_crop(img, boxes, labels[:2], torch.Generator())
    with pytest.raises(ValueError, match="boxes"):
        T.hflip(img, torch.zeros(3, 5))


def test_color_jitter_matches_torchvision_functional():
    g = torch.Generator().manual_seed(6)
    img = torch.rand(3, 17, 19, generator=g)
    seed = 123
    ours = T.color_jitter(img, torch.Generator().manual_seed(seed))
    # the same draws, replayed through torchvision's functional ops
    r = torch.Generator().manual_seed(seed)
    order = torch.randperm(4, generator=r).tolist()
    u = [float(torch.rand((), generator=r, dtype=torch.float64)) for _ in range(4)]
    fb, fc, fs = 0.875 + 0.25 * u[0], 0.5 + u[1], 0.5 + u[2]
    fh = -0.05 + 0.1 * u[3]
    x = img
    for op in order:
        x = [lambda y: TF.adjust_brightness(y, fb), lambda y: TF.adjust_contrast(y, fc),
             lambda y: TF.adjust_saturation(y, fs), lambda y: TF.adjust_hue(y, fh)][op](x)
    torch.testing.assert_close(ours, x, rtol=0, atol=2e-6)
    u8 = (img * 255).round().to(torch.uint8)
    out = T.color_jitter(u8, torch.Generator().manual_seed(seed))
    assert out.dtype == torch.uint8
    ref = T.color_jitter(u8.float() / 255, torch.Generator().manual_seed(seed))
    assert torch.equal(out, (ref * 255).round().to(torch.uint8))
    assert not torch.equal(T.color_jitter(u8, torch.Generator().manual_seed(1)),
                           T.color_jitter(u8, torch.Generator().manual_seed(2)))


def test_normalize():
    g = torch.Generator().manual_seed(7)
    u8 = torch.randint(0, 256, (3, 5, 6), generator=g, dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = T.normalize(u8, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, TF.normalize(u8.float() / 255, mean, std))
    with pytest.raises(ValueError, match="std"):
        T.normalize(u8, mean, (1.0, 0.0, 1.0))
