"""nms, batched_nms and nms_padded against torchvision and the pure-PyTorch reference.

Parity is exact: NMS is a discrete decision, and every backend computes torchvision's IoU
expression in the same precision and order, so the kept indices must be identical, not close.
torchvision (the oracle) is optional: the tests that need it skip when it is absent.
Triton's interpreter runs the same cases at a few hundred boxes (it takes milliseconds per
64-box tile); on a GPU every backend gets the full sizes.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from mlperf_fast.ops.nms import (Detections, _greedy, batched_nms, batched_nms_torch, nms,
                                 nms_padded, nms_padded_torch, nms_torch, suppression_matrix)


@pytest.fixture
def nms_backend(backend):
    return backend


def interpreted(backend) -> bool:
    """Triton on CPU tensors: the interpreter, which gets the small sizes."""
    return backend.name == "triton" and backend.device.type == "cpu"


def size(backend, full: int, small: int) -> int:
    return small if interpreted(backend) else full


@pytest.fixture
def tv():
    return pytest.importorskip("torchvision")


def random_boxes(gen, n, *, extent=100.0, size=(1.0, 30.0), grid=None):
    """(n, 4) boxes in (x1, y1, x2, y2). With ``grid``, coordinates are multiples of it (exact
    in float32, so torchvision's class-offset trick adds no rounding)."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * extent
    wh = size[0] + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (size[1] - size[0])
    boxes = torch.cat([xy, xy + wh], 1)
    if grid is not None:
        boxes = (boxes / grid).round() * grid
    return boxes.float()


def clustered_boxes(gen, n, clusters=5):
    centres = torch.rand(clusters, 2, generator=gen) * 200
    pick = torch.randint(0, clusters, (n,), generator=gen)
    c = centres[pick] + torch.randn(n, 2, generator=gen) * 2
    half = 10 + torch.rand(n, 2, generator=gen) * 2
    return torch.cat([c - half, c + half], 1)


def cases(gen, small=False):
    """(name, boxes, scores) pairs covering the issue's parity list; ``small``: a few hundred
    boxes at most, still several 64-box words and odd lengths."""
    n, big, mid, low = (150, 197, 130, 100) if small else (700, 2085, 300, 200)
    out = [
        ("random", random_boxes(gen, n), torch.rand(n, generator=gen)),
        ("clustered", clustered_boxes(gen, n), torch.rand(n, generator=gen)),
        ("identical", torch.tensor([[10.0, 10, 50, 60]]).repeat(50, 1), torch.rand(50, generator=gen)),
        ("identical-equal-scores", torch.tensor([[10.0, 10, 50, 60]]).repeat(40, 1), torch.full((40,), 0.5)),
        ("equal-scores", clustered_boxes(gen, mid), torch.randint(0, 4, (mid,), generator=gen).float() / 4),
        ("one-box", torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.3])),
        ("empty", torch.zeros(0, 4), torch.zeros(0)),
        ("big-odd", random_boxes(gen, big, extent=300 * math.sqrt(big / 2085)),
         torch.rand(big, generator=gen)),
    ]
    zero = random_boxes(gen, low)
    zero[::3, 2] = zero[::3, 0]   # zero width
    zero[1::3, 3] = zero[1::3, 1]  # zero height
    out.append(("zero-area", zero, torch.rand(low, generator=gen)))
    inv = random_boxes(gen, low)
    inv[::4] = inv[::4, [2, 3, 0, 1]]  # x2 < x1 and y2 < y1
    inv[1::4] = inv[1::4, [2, 1, 0, 3]]  # x2 < x1 only
    out.append(("inverted", inv, torch.rand(low, generator=gen)))
    nan = torch.rand(mid, generator=gen)
    nan[::7] = math.nan
    out.append(("nan-scores", clustered_boxes(gen, mid), nan))
    return out


THRESHOLDS = [0.0, 0.5, 0.7, 1.0]


@pytest.mark.parametrize("iou", THRESHOLDS)
def test_nms_matches_torchvision(nms_backend, tv, iou, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    for name, boxes, scores in cases(gen, small=interpreted(nms_backend)):
        boxes, scores = boxes.to(d), scores.to(d)
        want = tv.ops.nms(boxes, scores, iou)
        got = nms(boxes, scores, iou, backend=nms_backend.name)
        assert got.dtype == torch.int64 and got.device.type == d.type, name
        assert torch.equal(got.cpu(), want.cpu()), f"{name}: {got.tolist()[:20]} != {want.tolist()[:20]}"


@pytest.mark.parametrize("iou", [0.0, 0.5, 1.0])
def test_batched_nms_matches_torchvision(nms_backend, tv, iou, rng_seed):
    # Coordinates on a 1/8 grid below 128 and distinct scores: torchvision's class-offset trick is
    # then exact, and its per-class path orders equal scores arbitrarily, so neither ambiguity
    # reaches the comparison.
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    sizes = [(0, 1), (1, 1), (130, 3), (260, 10)] if interpreted(nms_backend) else \
        [(0, 1), (1, 1), (200, 3), (900, 10), (3000, 50)]
    for n, classes in sizes:
        boxes = random_boxes(gen, n, grid=0.125).to(d)
        scores = torch.randperm(n, generator=gen).float().div(n).to(d)
        idxs = torch.randint(0, classes, (n,), generator=gen).to(d)
        want = tv.ops.batched_nms(boxes, scores, idxs, iou)
        got = batched_nms(boxes, scores, idxs, iou, backend=nms_backend.name)
        assert torch.equal(got.cpu(), want.cpu()), (n, classes)
        # Integer idxs of any width give the same answer.
        got32 = batched_nms(boxes, scores, idxs.int(), iou, backend=nms_backend.name)
        assert torch.equal(got32.cpu(), want.cpu())


def test_batched_nms_ties_match_per_class_nms(nms_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    n = size(nms_backend, 500, 250)
    boxes = clustered_boxes(gen, n).to(d)
    scores = (torch.randint(0, 5, (n,), generator=gen).float() / 5).to(d)
    idxs = torch.randint(0, 4, (n,), generator=gen).to(d)
    got = batched_nms(boxes, scores, idxs, 0.5, backend=nms_backend.name)
    assert torch.equal(got.cpu(), batched_nms_torch(boxes, scores, idxs, 0.5).cpu())
    # Each class on its own gives the same kept set.
    for c in range(4):
        sel = torch.nonzero(idxs == c).flatten()
        own = sel[nms(boxes[sel], scores[sel], 0.5, backend=nms_backend.name)]
        assert set(own.tolist()) == set(got[idxs[got] == c].tolist())


def test_nms_against_reference_all_dtypes(nms_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    n = size(nms_backend, 400, 200)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        boxes = clustered_boxes(gen, n).to(d, dtype)
        scores = torch.rand(n, generator=gen).to(d, dtype)
        got = nms(boxes, scores, 0.5, backend=nms_backend.name)
        assert torch.equal(got.cpu(), nms_torch(boxes, scores, 0.5).cpu()), dtype


def test_nms_non_contiguous(nms_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    base = torch.cat([clustered_boxes(gen, 300), torch.rand(300, 1, generator=gen)], 1).to(d)
    boxes, scores = base[::2, :4], base[::2, 4]
    assert not boxes.is_contiguous() and not scores.is_contiguous()
    got = nms(boxes, scores, 0.5, backend=nms_backend.name)
    assert torch.equal(got.cpu(), nms_torch(boxes.contiguous(), scores.contiguous(), 0.5).cpu())


def fma_pairs(count: int = 48, seed: int = 0):
    """(P, 2, 4) float32 box pairs, the first box the earlier one, whose IoU lies on either side of
    0.5 depending on one rounding: nvcc builds the CUDA kernels' float32 area_a + area_b as
    fma(width_b, height_b, area_a), the CPU kernels round area_b first. Returns the pairs and, per
    pair, (suppressed under the CPU form, suppressed under the CUDA form), which differ."""
    from fractions import Fraction

    f32 = np.float32

    def round_f32(q: Fraction) -> np.float32:  # correctly rounded, ties to even
        f = f32(float(q))
        near = (np.nextafter(f, f32(-np.inf)), f, np.nextafter(f, f32(np.inf)))
        return min(near, key=lambda c: (abs(Fraction(float(c)) - q),
                                        int(np.array(c).view(np.int32)) & 1))

    rng = np.random.default_rng(seed)
    n = 100_000
    ax1, ay1 = rng.uniform(0, 100, n).astype(f32), rng.uniform(0, 100, n).astype(f32)
    ax2 = ax1 + rng.uniform(5, 50, n).astype(f32)
    ay2 = ay1 + rng.uniform(5, 50, n).astype(f32)
    shift = (ax2 - ax1) / f32(3)  # IoU near 1/2, then a few ulps of noise

    def jitter():
        return (1 + rng.integers(-8, 9, n) * 2.0**-22).astype(f32)

    bx1, by1 = (ax1 + shift) * jitter(), ay1 * jitter()
    bx2, by2 = (ax2 + shift) * jitter(), ay2 * jitter()
    inter = (np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), f32(0)) *
             np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), f32(0)))
    area_a = (ax2 - ax1) * (ay2 - ay1)
    dx, dy = bx2 - bx1, by2 - by1
    cpu = inter / ((area_a + dx * dy) - inter) > f32(0.5)
    # Through float64 the fused sum can round twice: a first sieve, checked exactly below.
    sieve = inter / ((dx.astype(np.float64) * dy + area_a).astype(f32) - inter) > f32(0.5)
    pairs, want = [], []
    for i in np.nonzero(sieve != cpu)[0]:
        fused = round_f32(Fraction(float(dx[i])) * Fraction(float(dy[i])) +
                          Fraction(float(area_a[i])))
        cuda = inter[i] / (fused - inter[i]) > f32(0.5)
        if cuda != cpu[i] and len(pairs) < count:
            pairs.append([[ax1[i], ay1[i], ax2[i], ay2[i]], [bx1[i], by1[i], bx2[i], by2[i]]])
            want.append((bool(cpu[i]), bool(cuda)))
    return torch.tensor(np.array(pairs)), want


def test_iou_rounding_at_the_threshold(nms_backend):
    # Each backend decides as its device's kernels do (torchvision's on that device) where one
    # rounding of the IoU decides.
    d = nms_backend.device
    if d.type == "cuda" and nms_backend.name == "torch":
        pytest.skip("the PyTorch reference rounds the earlier box's area on CUDA too")
    boxes, want = fma_pairs()
    suppressed = torch.tensor([w[1] if d.type == "cuda" else w[0] for w in want])
    assert 0 < int(suppressed.sum()) < len(want)  # both ways among the pairs
    p = boxes.shape[0]
    boxes = boxes.to(d)
    scores = torch.tensor([[0.9, 0.1]]).expand(p, 2).contiguous().to(d)
    det = nms_padded(boxes, scores, None, 0.5, backend=nms_backend.name)
    assert torch.equal(det.counts.cpu(), 2 - suppressed.long())
    # The same through batched_nms: one class per pair, the second box of a pair at an odd index.
    pair_of = torch.arange(p).repeat_interleave(2).to(d)
    flat = batched_nms(boxes.reshape(-1, 4), scores.reshape(-1), pair_of, 0.5,
                       backend=nms_backend.name)
    assert int(flat.cpu().remainder(2).sum()) == int((~suppressed).sum())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fma_pairs_match_torchvision(tv, device):
    boxes, want = fma_pairs()
    scores = torch.tensor([0.9, 0.1], device=device)
    got = [tv.ops.nms(b.to(device), scores, 0.5).numel() == 1 for b in boxes]
    assert got == [w[1] if device == "cuda" else w[0] for w in want]


# ---------------------------------------------------------------------------------------------
# The padded multi-image form


def per_image_loop(tv, boxes, scores, labels, iou, score_threshold, top_k, max_det):
    """What a detector does image by image with torchvision: filter, top-k, NMS, truncate."""
    out = []
    for b in range(boxes.shape[0]):
        keep = torch.nonzero(scores[b] > score_threshold).flatten()
        s = scores[b][keep]
        if top_k:
            s, order = s.topk(min(top_k, s.numel()))
            keep = keep[order]
        else:
            s, order = s.sort(descending=True, stable=True)
            keep = keep[order]
        if labels is None:
            k = tv.ops.nms(boxes[b][keep], s, iou)
        else:
            k = tv.ops.batched_nms(boxes[b][keep], s, labels[b][keep], iou)
        out.append(keep[k][:max_det] if max_det else keep[k])
    return out


def check_detections(det: Detections, boxes, scores, labels, expected):
    batch = boxes.shape[0]
    k = det.scores.shape[1]
    assert det.boxes.shape == (batch, k, 4) and det.labels.shape == (batch, k)
    assert det.indices.shape == (batch, k) and det.counts.shape == (batch,)
    for b in range(batch):
        idx = expected[b].to(det.indices.device)
        c = idx.numel()
        assert int(det.counts[b]) == c, b
        assert torch.equal(det.indices[b, :c], idx), b
        assert torch.equal(det.boxes[b, :c], boxes[b][idx])
        assert torch.equal(det.scores[b, :c], scores[b][idx])
        want_labels = torch.zeros_like(idx) if labels is None else labels[b][idx].long()
        assert torch.equal(det.labels[b, :c], want_labels)
        assert (det.indices[b, c:] == -1).all() and (det.labels[b, c:] == -1).all()
        assert (det.scores[b, c:] == 0).all() and (det.boxes[b, c:] == 0).all()


@pytest.mark.parametrize("per_class", [False, True], ids=["agnostic", "per-class"])
@pytest.mark.parametrize("limits", [(None, None, -math.inf), (300, 100, 0.05), (50, 1000, 0.5)],
                         ids=["no-limits", "topk300-max100", "topk50-max1000"])
def test_padded_equals_torchvision_loop(nms_backend, tv, per_class, limits, rng_seed):
    top_k, max_det, sthr = limits
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    batch, n = 6, 700
    if interpreted(nms_backend):  # the same cuts, at a third of the size
        batch, n = 3, 230
        top_k, max_det = top_k and top_k // 3, max_det and max_det // 3
    boxes = torch.stack([random_boxes(gen, n, grid=0.125) for _ in range(batch)]).to(d)
    # Distinct scores: torch.topk and a stable sort agree only without ties.
    scores = torch.stack([torch.randperm(n, generator=gen).float().div(n) for _ in range(batch)]).to(d)
    labels = torch.randint(0, 7, (batch, n), generator=gen).to(d) if per_class else None
    det = nms_padded(boxes, scores, labels, 0.5, sthr, top_k, max_det, backend=nms_backend.name)
    expected = per_image_loop(tv, boxes, scores, labels, 0.5, sthr, top_k, max_det)
    check_detections(det, boxes, scores, labels, expected)


@pytest.mark.parametrize("per_class", [False, True], ids=["agnostic", "per-class"])
def test_padded_equals_reference_with_ties_and_edges(nms_backend, per_class, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    batch, n = 5, size(nms_backend, 400, 100)
    boxes = torch.stack([clustered_boxes(gen, n) for _ in range(batch)])
    boxes[1, ::5] = boxes[1, ::5, [2, 3, 0, 1]]           # inverted boxes
    boxes[2, ::3, 2] = boxes[2, ::3, 0]                   # zero-area boxes
    boxes[3] = boxes[3, :1].expand(n, 4)                  # identical boxes
    scores = torch.randint(0, 6, (batch, n), generator=gen).float() / 6  # many ties
    scores[0, ::4] = math.nan
    scores[4] = -math.inf                                 # no candidate at all
    scores[4, 7] = 0.5
    labels = torch.randint(0, 3, (batch, n), generator=gen) if per_class else None
    boxes, scores = boxes.to(d), scores.to(d)
    labels = labels.to(d) if labels is not None else None
    for iou in (0.0, 0.5, 1.0):
        for top_k, max_det, sthr in [(None, None, -math.inf), (100, 20, 0.1), (1, 1, 0.0)]:
            det = nms_padded(boxes, scores, labels, iou, sthr, top_k, max_det, backend=nms_backend.name)
            ref = nms_padded_torch(boxes.cpu(), scores.cpu(), None if labels is None else labels.cpu(),
                                   iou, sthr, top_k or 0, max_det or 0)
            for got, want in zip(det, ref):
                assert torch.equal(got.cpu(), want), (iou, top_k, max_det, sthr)
    # NaN and -inf scores are never candidates.
    det = nms_padded(boxes, scores, labels, 0.5, backend=nms_backend.name)
    assert not torch.isnan(det.scores).any()
    assert int(det.counts[4]) == 1 and int(det.indices[4, 0]) == 7


def test_padded_empty_and_tiny(nms_backend):
    d = nms_backend.device
    det = nms_padded(torch.zeros(3, 0, 4, device=d), torch.zeros(3, 0, device=d),
                     backend=nms_backend.name)
    assert det.boxes.shape == (3, 0, 4) and det.counts.tolist() == [0, 0, 0]
    det = nms_padded(torch.zeros(0, 5, 4, device=d), torch.zeros(0, 5, device=d), max_detections=3,
                     backend=nms_backend.name)
    assert det.boxes.shape == (0, 3, 4) and det.counts.shape == (0,)
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11]]], device=d)
    det = nms_padded(boxes, torch.tensor([[0.4, 0.9]], device=d), backend=nms_backend.name)
    assert det.indices.tolist() == [[1, -1]] and det.counts.tolist() == [1]


def test_padded_many_blocks(nms_backend, rng_seed):
    # More than 64 candidates per image in several 64-box words, and a max_detections that stops
    # the walk in the middle of a word.
    gen = torch.Generator().manual_seed(rng_seed)
    d = nms_backend.device
    n = size(nms_backend, 1500, 300)
    boxes = torch.stack([random_boxes(gen, n, extent=400 * math.sqrt(n / 1500)) for _ in range(3)]).to(d)
    scores = torch.rand(3, n, generator=gen).to(d)
    for max_det in (None, 70, 129):
        det = nms_padded(boxes, scores, None, 0.3, max_detections=max_det, backend=nms_backend.name)
        ref = nms_padded_torch(boxes.cpu(), scores.cpu(), None, 0.3, -math.inf, 0, max_det or 0)
        for got, want in zip(det, ref):
            assert torch.equal(got.cpu(), want)


# ---------------------------------------------------------------------------------------------
# The Triton kernels' pieces, on CPU tensors through the interpreter


def needs_interpreter():
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter runs only where TRITON_INTERPRET=1 (set without a GPU)")
    from mlperf_fast.kernels import nms as kernel

    return kernel


def mask_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) bool from the mask kernel's (64 W, W) words of one image, upper triangle only."""
    bit = torch.arange(64)
    dense = ((words[:n, :, None] >> bit) & 1).bool().reshape(n, -1)[:, :n]
    return dense & torch.ones(n, n, dtype=torch.bool).triu(1)


@pytest.mark.parametrize("rules", ["cpu", "cuda"])
def test_triton_mask_matches_reference_bits(rules, rng_seed):
    # Every bit of the mask, for every dtype, against the reference's matrix under the same
    # device rules: on CPU tensors the kernel can follow either (the GPU follows CUDA's).
    kernel = needs_interpreter()
    gen = torch.Generator().manual_seed(rng_seed)
    n = 150
    base = clustered_boxes(gen, n, clusters=3)
    base[::9] = base[::9, [2, 3, 0, 1]]  # some inverted boxes
    order = torch.randperm(n, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        boxes = base.to(dtype)
        for iou in (0.0, 0.3, 0.5, 1.0):
            want = suppression_matrix(boxes[order], iou, rules=rules).triu(1)
            words = kernel.suppression_mask(boxes[None], order[None], None, None, iou,
                                            cuda_rules=rules == "cuda")[0]
            assert torch.equal(mask_bits(words, n), want), (dtype, iou)
        words = kernel.suppression_mask(boxes[None], order[None], labels[None], None, 0.5,
                                        cuda_rules=rules == "cuda")[0]
        same = labels[order][:, None] == labels[order][None, :]
        want = suppression_matrix(boxes[order], 0.5, rules=rules).triu(1) & same
        assert torch.equal(mask_bits(words, n), want), dtype


def test_triton_cuda_rules_in_half_precision():
    # Large boxes with fine lower corners and coarse upper ones, so that float16/bfloat16
    # overlaps and heights round: the CUDA rules and the CPU rules disagree on some pairs, and
    # the kernel follows the rules it is given.
    kernel = needs_interpreter()
    gen = torch.Generator().manual_seed(0)
    n = 128
    lo = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 4
    hi = 600 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 400
    order = torch.arange(n)
    for dtype in (torch.float16, torch.bfloat16):
        boxes = torch.cat([lo, hi], 1).to(dtype)
        differ = 0
        for iou in torch.linspace(0.4, 0.95, 6).tolist():
            ref = {r: suppression_matrix(boxes, iou, rules=r).triu(1) for r in ("cpu", "cuda")}
            differ += int((ref["cpu"] != ref["cuda"]).sum())
            for rules, want in ref.items():
                words = kernel.suppression_mask(boxes[None], order[None], None, None, iou,
                                                cuda_rules=rules == "cuda")[0]
                assert torch.equal(mask_bits(words, n), want), (dtype, rules, iou)
            index, counts = kernel.nms_keep(boxes[None], order[None], None, iou, cuda_rules=True)
            assert index[0, :int(counts[0])].tolist() == _greedy(ref["cuda"], n, n), (dtype, iou)
        assert differ > 0, f"{dtype}: the data no longer tells the two rules apart"


def test_triton_padded_n_valid_and_slots():
    # Images whose candidate count is 0, inside a word, a whole word and past the order.
    kernel = needs_interpreter()
    gen = torch.Generator().manual_seed(0)
    batch, n = 4, 150
    boxes = torch.stack([random_boxes(gen, n, extent=150) for _ in range(batch)])
    scores = torch.rand(batch, n, generator=gen)
    order = torch.sort(scores, dim=1, descending=True, stable=True)[1]
    n_valid = torch.tensor([0, 37, 64, 1000])
    out = kernel.nms_padded(boxes, scores, None, order, n_valid, 0.4, 120)
    for b in range(batch):
        v = min(int(n_valid[b]), n)
        keep = _greedy(suppression_matrix(boxes[b][order[b]], 0.4), v, 120)
        c = len(keep)
        idx = order[b][keep]
        assert int(out[4][b]) == c and torch.equal(out[3][b, :c], idx)
        assert torch.equal(out[0][b, :c], boxes[b][idx]) and torch.equal(out[1][b, :c], scores[b][idx])
        assert (out[2][b, :c] == 0).all() and (out[2][b, c:] == -1).all()
        assert (out[3][b, c:] == -1).all() and (out[0][b, c:] == 0).all() and (out[1][b, c:] == 0).all()


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs():
    b, s = torch.rand(5, 4), torch.rand(5)
    with pytest.raises(TypeError, match="boxes"):
        nms([[0, 0, 1, 1]], s, 0.5)
    with pytest.raises(ValueError, match="boxes"):
        nms(torch.rand(5, 3), s, 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(b, torch.rand(6), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(b, torch.rand(5, 1), 0.5)
    with pytest.raises(TypeError, match="boxes"):
        nms(b.long(), s, 0.5)
    with pytest.raises(TypeError, match="scores"):
        nms(b, s.int(), 0.5)
    with pytest.raises(TypeError, match="iou_threshold"):
        nms(b, s, "0.5")
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(b, s, torch.zeros(4, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="idxs"):
        batched_nms(b, s, torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="backend"):
        nms(b, s, 0.5, backend="tritonn")
    with pytest.raises(ValueError, match="boxes"):
        nms_padded(b, s)
    with pytest.raises(ValueError, match="labels"):
        nms_padded(b[None], s[None], torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="max_detections"):
        nms_padded(b[None], s[None], max_detections=0)
    with pytest.raises(TypeError, match="pre_nms_top_k"):
        nms_padded(b[None], s[None], pre_nms_top_k=2.5)


def test_triton_needs_a_gpu_or_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    b, s = torch.rand(5, 4), torch.rand(5)
    with pytest.raises(ValueError, match="triton"):
        nms(b, s, 0.5, backend="triton")
    with pytest.raises(ValueError, match="triton"):
        nms_padded(b[None], s[None], backend="triton")


def test_auto_takes_the_fastest_backend_built(monkeypatch):
    from mlperf_fast.ops._library import OPS, choose_backend, has_native
    from mlperf_fast.ops.nms import NMS_TRITON_MAX_BOXES

    monkeypatch.delenv("MLPERF_FAST_BACKEND", raising=False)
    if has_native("nms", torch.device("cpu")):
        for op in ("nms", "batched_nms", "nms_padded"):
            assert choose_backend(op, torch.device("cpu")) == "native", op
    if torch.cuda.is_available():
        d = torch.device("cuda")
        # The measured choice (benchmarks/results): Triton for batched_nms and for nms up to
        # NMS_TRITON_MAX_BOXES boxes, native above and for the padded form.
        assert OPS["batched_nms"].choose(d, size=20_000) == "triton"
        assert OPS["nms"].choose(d, size=1_000) == "triton"
        if has_native("nms", d):
            assert OPS["nms"].choose(d, size=NMS_TRITON_MAX_BOXES + 1) == "native"
            assert OPS["nms_padded"].choose(d) == "native"


def test_native_op_checks_arguments_too():
    if not torch.ops.mlperf_fast.nms.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    with pytest.raises(ValueError, match="scores"):
        torch.ops.mlperf_fast.nms(torch.rand(5, 4), torch.rand(4), 0.5)
    with pytest.raises(TypeError, match="idxs"):
        torch.ops.mlperf_fast.batched_nms(torch.rand(5, 4), torch.rand(5), torch.rand(5), 0.5)
    with pytest.raises(ValueError, match="boxes"):
        torch.ops.mlperf_fast.nms_padded(torch.rand(5, 4), torch.rand(5), None, 0.5, 0.0, 0, 0)


@pytest.mark.cuda
def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="device|on"):
        nms(torch.rand(5, 4), torch.rand(5, device="cuda"), 0.5)


@pytest.mark.cuda
@pytest.mark.parametrize("which", ["native", "triton"])
def test_large_single_image_matches_torchvision(tv, which, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    for n in (20_000, 50_000):
        # On the 1/8 grid, torchvision's class offsets (up to ~85,000 here) stay exact in float32.
        boxes = random_boxes(gen, n, extent=1000, size=(4, 80), grid=0.125).cuda()
        scores = torch.rand(n, generator=gen).cuda()
        assert torch.equal(nms(boxes, scores, 0.5, backend=which), tv.ops.nms(boxes, scores, 0.5))
        idxs = torch.randint(0, 80, (n,), generator=gen).cuda()
        want = tv.ops.batched_nms(boxes, scores, idxs, 0.5)
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.5, backend=which), want)


@pytest.mark.cuda
@pytest.mark.parametrize("per_class", [False, True], ids=["agnostic", "per-class"])
def test_padded_large_batch_triton_matches_native(tv, per_class, rng_seed):
    # The benchmark's shape: 32 images x 1,000 boxes, and 8 x 20,000 with top-k and limits.
    gen = torch.Generator().manual_seed(rng_seed)
    for batch, n, top_k, max_det, sthr in [(32, 1000, None, None, -math.inf),
                                           (8, 20_000, 5000, 300, 0.05)]:
        boxes = torch.stack([random_boxes(gen, n, extent=800, size=(16, 256), grid=0.125)
                             for _ in range(batch)]).cuda()
        scores = torch.stack([torch.randperm(n, generator=gen).float().div(n)
                              for _ in range(batch)]).cuda()
        labels = torch.randint(0, 80, (batch, n), generator=gen).cuda() if per_class else None
        got = nms_padded(boxes, scores, labels, 0.5, sthr, top_k, max_det, backend="triton")
        want = nms_padded(boxes, scores, labels, 0.5, sthr, top_k, max_det, backend="native")
        for g, w in zip(got, want):
            assert torch.equal(g, w), (batch, n)
        if batch == 32:
            expected = per_image_loop(tv, boxes, scores, labels, 0.5, sthr, top_k, max_det)
            check_detections(got, boxes, scores, labels, expected)


@pytest.mark.cuda
def test_triton_cuda_half_precision_matches_native(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        boxes = clustered_boxes(gen, 3000, clusters=40).cuda().to(dtype)
        scores = torch.rand(3000, generator=gen).cuda().to(dtype)
        idxs = torch.randint(0, 5, (3000,), generator=gen).cuda()
        for iou in (0.0, 0.5, 0.7, 1.0):
            assert torch.equal(nms(boxes, scores, iou, backend="triton"),
                               nms(boxes, scores, iou, backend="native")), (dtype, iou)
            assert torch.equal(batched_nms(boxes, scores, idxs, iou, backend="triton"),
                               batched_nms(boxes, scores, idxs, iou, backend="native")), (dtype, iou)


@pytest.mark.cuda
@pytest.mark.parametrize("which", ["native", "triton"])
def test_cuda_graph_capture_padded(which, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    boxes = torch.stack([clustered_boxes(gen, 500) for _ in range(4)]).cuda()
    scores = torch.rand(4, 500, generator=gen).cuda()
    nms_padded(boxes, scores, None, 0.5, 0.1, 300, 100, backend=which)  # warm up (and compile)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        det = nms_padded(boxes, scores, None, 0.5, 0.1, 300, 100, backend=which)
    scores.copy_(torch.rand(4, 500, generator=gen).cuda())
    graph.replay()
    ref = nms_padded_torch(boxes.cpu(), scores.cpu(), None, 0.5, 0.1, 300, 100)
    for got, want in zip(det, ref):
        assert torch.equal(got.cpu(), want)


def test_fake_implementations():
    if not torch.ops.mlperf_fast.nms_padded.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        boxes = mode.from_tensor(torch.rand(2, 50, 4))
        scores = mode.from_tensor(torch.rand(2, 50))
        out = torch.ops.mlperf_fast.nms_padded(boxes, scores, None, 0.5, 0.0, 30, 10)
        assert out[0].shape == (2, 10, 4) and out[4].shape == (2,) and out[2].dtype == torch.int64
        keep = torch.ops.mlperf_fast.nms(boxes[0], scores[0], 0.5)
        assert keep.dim() == 1 and keep.dtype == torch.int64
