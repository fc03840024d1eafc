"""The batched RetinaNet post-processing against the reference's per-image loop.

The kept (anchor, class) pairs must be identical (they come from top-k and NMS, discrete); scores
agree to a float32 ulp (see canonical); boxes to the decode's tolerance (test_box_decode.py),
exactly on the torch backend.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.retinanet_postprocess import (retinanet_postprocess,
                                                   retinanet_postprocess_reference)


def make(gen, batch, levels, classes, device):
    grid = []
    for size in levels:
        xy = torch.rand(size, 2, generator=gen) * 300
        wh = 16 + torch.rand(size, 2, generator=gen) * 120
        grid.append(torch.cat([xy, xy + wh], 1))
    anchors = torch.cat(grid)
    a = anchors.shape[0]
    logits = torch.randn(batch, a, classes, generator=gen) * 2 - 3
    codes = torch.randn(batch, a, 4, generator=gen) * 0.3
    sizes = torch.tensor([[300, 320], [280, 400], [350, 350], [200, 300]])[:batch]
    return [t.to(device) for t in (logits, codes, anchors, sizes)]


def canonical(boxes, scores, labels, anchors):
    """Rows by (anchor, label). The order by score is checked separately: torch's CPU sigmoid
    rounds differently in its vector and scalar loops (by an ulp), and distinct logits can round
    to one float32 score, which the reference's top-k orders as it likes."""
    order = torch.sort(anchors * 1000 + labels)[1]
    return boxes[order], scores[order], labels[order], anchors[order]


def check(got, want, exact_boxes):
    for b, expected in enumerate(want):
        boxes, scores, labels, anchors = canonical(*expected)
        c = scores.numel()
        assert int(got.counts[b]) == c
        assert (got.scores[b, 1:c] <= got.scores[b, :c - 1]).all()
        g_boxes, g_scores, g_labels, g_anchors = canonical(
            got.boxes[b, :c], got.scores[b, :c], got.labels[b, :c], got.indices[b, :c])
        assert torch.equal(g_labels, labels)
        assert torch.equal(g_anchors, anchors)
        torch.testing.assert_close(g_scores, scores, rtol=2.5e-7, atol=0)  # one float32 ulp
        if exact_boxes:
            assert torch.equal(g_boxes, boxes)
        else:
            torch.testing.assert_close(g_boxes, boxes, rtol=1e-5, atol=5e-4)
        assert (got.indices[b, c:] == -1).all()


@pytest.mark.parametrize("limits", [(20, 15), (1000, 300), (5, 3)], ids=["topk20", "large", "tiny"])
def test_matches_reference_loop(backend, limits, rng_seed):
    topk, max_det = limits
    gen = torch.Generator().manual_seed(rng_seed)
    levels = [120, 40, 9]
    logits, codes, anchors, sizes = make(gen, 4, levels, 7, backend.device)
    got = retinanet_postprocess(logits, codes, anchors, sizes, levels, topk_candidates=topk,
                                detections_per_img=max_det, backend=backend.name)
    assert got.boxes.shape[1] == min(max_det, sum(min(topk, s * 7) for s in levels))
    want = retinanet_postprocess_reference(logits, codes, anchors, sizes, levels,
                                           topk_candidates=topk, detections_per_img=max_det)
    # Bit-exact boxes only on the CPU: on the GPU the fused decode and torch's separate kernels
    # contract multiply-adds into FMAs differently, which moves the last bit.
    check(got, want, exact_boxes=backend.name != "triton" and backend.device.type == "cpu")
    # Per-image anchors give the same answer.
    per_image = anchors[None].expand(4, -1, -1)
    again = retinanet_postprocess(logits, codes, per_image, sizes, levels, topk_candidates=topk,
                                  detections_per_img=max_det, backend=backend.name)
    for x, y in zip(got, again):
        assert torch.equal(x, y)


def test_nothing_above_threshold(backend):
    d = backend.device
    logits = torch.full((2, 30, 3), -10.0, device=d)
    out = retinanet_postprocess(logits, torch.zeros(2, 30, 4, device=d),
                                torch.rand(30, 4, device=d) + torch.tensor([0, 0, 1, 1.0], device=d),
                                torch.tensor([[10, 10], [10, 10]], device=d), backend=backend.name)
    assert out.counts.tolist() == [0, 0] and (out.indices == -1).all()


def test_bad_inputs():
    logits, codes = torch.zeros(2, 10, 3), torch.zeros(2, 10, 4)
    anchors, sizes = torch.zeros(10, 4), torch.ones(2, 2)
    with pytest.raises(ValueError, match="bbox_regression"):
        retinanet_postprocess(logits, codes[:, :9], anchors, sizes)
    with pytest.raises(ValueError, match="anchors"):
        retinanet_postprocess(logits, codes, anchors[:9], sizes)
    with pytest.raises(ValueError, match="level_sizes"):
        retinanet_postprocess(logits, codes, anchors, sizes, [4, 4])
    with pytest.raises(ValueError, match="image_sizes"):
        retinanet_postprocess(logits, codes, anchors, sizes[:1])
    with pytest.raises(ValueError, match="topk_candidates"):
        retinanet_postprocess(logits, codes, anchors, sizes, topk_candidates=0)
