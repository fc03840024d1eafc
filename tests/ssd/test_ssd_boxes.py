"""SSD's geometry and box coding: the closed configuration's facts (8,732 default boxes), the
default boxes against a hand computation, the reference and torchvision's DefaultBoxGenerator;
the batched encoder against the reference's per-image Encoder (forced best matches, shared best
boxes, images without boxes) and torchvision's BoxCoder; decode as the inverse of encode; the
batched decoder (NMS) against the reference's loops."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mlperf_fast.workloads.ssd import boxes as B
from mlperf_fast.workloads.ssd import reference as R
from mlperf_fast.workloads.ssd.config import CLOSED, EMBEDDED


def _geometry(cfg):
    return (cfg.image_size, cfg.feat_sizes, cfg.steps, cfg.scales, cfg.aspect_ratios)


def test_closed_geometry_is_the_references():
    assert CLOSED.num_classes == 81 and CLOSED.image_size == 300
    assert CLOSED.feat_sizes == (38, 19, 10, 5, 3, 1)
    assert CLOSED.num_defaults == (4, 6, 6, 6, 4, 4)
    per_map = [nd * f * f for nd, f in zip(CLOSED.num_defaults, CLOSED.feat_sizes)]
    assert per_map == [5776, 2166, 600, 150, 36, 4] and CLOSED.num_anchors == 8732
    assert len(B.default_boxes(*_geometry(CLOSED))) == 8732
    assert (CLOSED.scale_xy, CLOSED.scale_wh, CLOSED.match_iou, CLOSED.neg_ratio) == (0.1, 0.2,
                                                                                      0.5, 3)
    assert CLOSED.base_lr == pytest.approx(2.5e-3 * 1024 / 32)
    assert (CLOSED.momentum, CLOSED.weight_decay, CLOSED.decay_epochs) == (0.9, 5e-4, (40, 50))
    assert CLOSED.warmup_steps(117_266) == 299 and CLOSED.warmup_epochs == 2.619685
    assert CLOSED.targets[0].target == 0.23 and CLOSED.schedule.every == 5
    assert len(B.default_boxes(*_geometry(EMBEDDED))) == EMBEDDED.num_anchors


def test_default_boxes_by_hand_and_by_the_reference():
    # the reference's nested loops, in Python floats
    fig, feats, steps, scales, ars = _geometry(CLOSED)
    hand = []
    for k, f in enumerate(feats):
        fk = fig / steps[k]
        s1, s2 = scales[k] / fig, scales[k + 1] / fig
        sizes = [(s1, s1), (math.sqrt(s1 * s2),) * 2]
        for a in ars[k]:
            sizes += [(s1 * math.sqrt(a), s1 / math.sqrt(a)), (s1 / math.sqrt(a), s1 * math.sqrt(a))]
        for w, h in sizes:
            for i, j in itertools.product(range(f), repeat=2):
                hand.append([min(max(v, 0.0), 1.0) for v in ((j + 0.5) / fk, (i + 0.5) / fk, w, h)])
    hand = torch.tensor(hand, dtype=torch.float32)
    ours = B.default_boxes(*_geometry(CLOSED), order="dhw")
    ref = R.dboxes300_coco()
    assert torch.equal(ours.xywh, hand)
    assert torch.equal(ours.xywh, ref("xywh")) and torch.equal(ours.ltrb, ref("ltrb"))
    # a few values worked out: the first box of the 38 x 38 map, the last of the 1 x 1 map
    assert ours.xywh[0].tolist() == pytest.approx([4 / 300, 4 / 300, 0.07, 0.07])
    assert ours.xywh[-1].tolist() == pytest.approx([0.5, 0.5, 0.87 / math.sqrt(2),
                                                    min(1.0, 0.87 * math.sqrt(2))])


def test_hwd_order_is_torchvisions_default_box_generator():
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    fig, feats, steps, scales, ars = _geometry(CLOSED)
    gen = DefaultBoxGenerator([list(a) for a in ars], scales=[s / fig for s in scales],
                              steps=list(steps))
    tv = gen._grid_default_boxes([[f, f] for f in feats], [fig, fig])
    ours = B.default_boxes(*_geometry(CLOSED))
    torch.testing.assert_close(ours.xywh, tv.clamp(0, 1), rtol=0, atol=1e-7)
    perm = B.reference_permutation(feats, CLOSED.num_defaults)
    ref = B.default_boxes(*_geometry(CLOSED), order="dhw")
    assert torch.equal(ours.xywh, ref.xywh[perm])


def _random_gt(g: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 0.7
    wh = torch.rand(n, 2, generator=g) * 0.5 + 0.02
    return torch.cat([xy, (xy + wh).clamp(max=1.0)], 1)


def test_encoder_is_the_references_per_image_encoder():
    g = torch.Generator().manual_seed(0)
    dref = R.dboxes300_coco()
    enc = R.ReferenceEncoder(dref)
    ours = B.default_boxes(*_geometry(CLOSED), order="dhw")
    counts = [1, 5, 0, 12]
    gmax = max(counts)
    gt = torch.zeros(len(counts), gmax, 4)
    lab = torch.zeros(len(counts), gmax, dtype=torch.int64)
    for b, n in enumerate(counts):
        gt[b, :n] = _random_gt(g, n)
        lab[b, :n] = torch.randint(1, 81, (n,), generator=g)
    # two identical boxes: both want the same best default box, the later one keeps it
    gt[3, 11] = gt[3, 10]
    loc, labels = B.encode_batch(gt, lab, torch.tensor(counts), ours)
    vec = R.ReferenceLoss(dref)._loc_vec
    for b, n in enumerate(counts):
        if n == 0:
            assert torch.equal(labels[b], torch.zeros(8732, dtype=torch.int64))
            assert torch.equal(loc[b], torch.zeros(8732, 4))
            continue
        rbox, rlab = enc.encode(gt[b, :n].clone(), lab[b, :n].clone())
        assert torch.equal(labels[b], rlab), b
        rvec = vec(rbox.t()[None])[0].t()
        torch.testing.assert_close(loc[b], rvec, rtol=1e-5, atol=1e-5)
        assert (rlab > 0).sum() >= len(set(lab[b, :n].tolist())) > 0
    single = B.encode(gt[1, :5], lab[1, :5], ours)
    assert torch.equal(single[1], labels[1]) and torch.equal(single[0], loc[1])


def test_encoding_is_torchvisions_box_coder_and_decode_inverts_it():
    from torchvision.models.detection._utils import BoxCoder

    g = torch.Generator().manual_seed(1)
    d = B.default_boxes(*_geometry(CLOSED))
    gt = _random_gt(g, 7)[None]
    lab = torch.randint(1, 81, (1, 7), generator=g)
    loc, labels = B.encode_batch(gt, lab, torch.tensor([7]), d)
    pos = labels[0] > 0
    from mlperf_fast.ops.box_iou import box_iou

    best = box_iou(gt[0], d.ltrb).argmax(0)  # each default box's best gt
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    tv = coder.encode_single(gt[0][best], d.ltrb)
    torch.testing.assert_close(loc[0][pos], tv[pos], rtol=1e-4, atol=1e-4)
    back = B.decode_boxes(loc, d)[0]
    torch.testing.assert_close(back[pos], gt[0][best][pos], rtol=0, atol=1e-5)


def test_batched_decoder_matches_the_reference_loops():
    g = torch.Generator().manual_seed(2)
    dref = R.dboxes300_coco()
    d = B.default_boxes(*_geometry(CLOSED), order="dhw")
    b, c = 2, 6
    ploc = torch.randn(b, 4, 8732, generator=g) * 0.5
    # a few confident classes, most boxes background
    plabel = torch.randn(b, c, 8732, generator=g)
    plabel[:, 0] += 3.0
    plabel[:, 2, :400] += 6.0
    ref = R.ReferenceEncoder(dref).decode_batch(ploc.clone(), plabel.clone(), 0.5, 200)
    det = B.decode_batch(ploc.transpose(1, 2), plabel.transpose(1, 2), d)
    for i in range(b):
        rb, rl, rs = ref[i]
        n = int(det.counts[i])
        assert n == len(rs) and n > 0
        order = torch.argsort(rs, descending=True, stable=True)
        torch.testing.assert_close(det.scores[i, :n], rs[order], rtol=1e-5, atol=1e-6)
        assert torch.equal(det.labels[i, :n], rl[order])
        torch.testing.assert_close(det.boxes[i, :n], rb[order], rtol=1e-4, atol=1e-5)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="feature maps"):
        B.default_boxes(300, (38, 19), (8,), (21, 45, 99), ((2,), (2,)))
    with pytest.raises(ValueError, match="shape"):
        B.encode_batch(torch.zeros(4, 4), torch.zeros(4, dtype=torch.int64), torch.tensor([4]),
                       B.default_boxes(*_geometry(EMBEDDED)))
