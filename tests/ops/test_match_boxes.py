"""match_boxes against torchvision's Matcher on box_iou (RetinaNet's use), and against a plain
per-image reference for the batched, padded form. Matches are discrete: compared exactly."""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.match_boxes import match_boxes, match_boxes_torch


@pytest.fixture
def m_backend(backend):
    if backend.name == "native":
        pytest.skip("match_boxes has Triton and torch backends")
    return backend


def anchors_grid(device):
    c = (torch.arange(12, dtype=torch.float32) + 0.5) * 16
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    ctr = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
    wh = torch.tensor([[32.0, 32.0], [45.0, 22.0], [22.0, 45.0], [64.0, 64.0]]).reshape(1, 4, 2)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], -1).reshape(-1, 4).to(device)


def gts(gen, n):
    xy = torch.rand(n, 2, generator=gen) * 150
    wh = 10 + torch.rand(n, 2, generator=gen) * 60
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("low_quality", [True, False])
def test_matches_torchvision_matcher(m_backend, low_quality, rng_seed):
    pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher
    from torchvision.ops import box_iou

    gen = torch.Generator().manual_seed(rng_seed)
    d = m_backend.device
    anchors = anchors_grid(d)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)
    for n in (1, 2, 9, 40):
        gt = gts(gen, n).to(d)
        gt[n // 2] = gt[0]  # a duplicate ground truth: ties go to the lower index
        want = matcher(box_iou(gt, anchors))
        got = match_boxes(gt, anchors, None, 0.5, 0.4, low_quality, backend=m_backend.name)
        assert got.dtype == torch.int64 and torch.equal(got, want), n


def test_batched_padded(m_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = m_backend.device
    anchors = anchors_grid(d)
    gt = torch.stack([gts(gen, 12) for _ in range(4)]).to(d)
    num = torch.tensor([12, 3, 0, 7], device=d)
    got = match_boxes(gt, anchors, num, backend=m_backend.name)
    want = match_boxes_torch(gt.cpu(), anchors.cpu(), num.cpu(), 0.5, 0.4, True)
    assert torch.equal(got.cpu(), want)
    assert (got[2] == -1).all() and int(got[1].max()) < 3
    for b in range(4):  # padding rows never matter
        alone = match_boxes(gt[b, :int(num[b])], anchors, backend=m_backend.name)
        assert torch.equal(alone, got[b])


def test_empty(m_backend):
    d = m_backend.device
    assert match_boxes(torch.zeros(2, 3, 4, device=d), torch.zeros(0, 4, device=d),
                       backend=m_backend.name).shape == (2, 0)
    out = match_boxes(torch.zeros(0, 4, device=d), anchors_grid(d), backend=m_backend.name)
    assert (out == -1).all()


def test_bad_inputs():
    gt, anc = torch.zeros(2, 3, 4), torch.zeros(5, 4)
    with pytest.raises(ValueError, match="num_gt"):
        match_boxes(gt, anc, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="num_gt"):
        match_boxes(gt, anc, torch.tensor([1]))
    with pytest.raises(TypeError, match="num_gt"):
        match_boxes(gt, anc, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="anchors"):
        match_boxes(gt, torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="low_threshold"):
        match_boxes(gt, anc, None, 0.4, 0.5)
