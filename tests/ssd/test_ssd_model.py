"""The SSD models: the reference port's trunk against torchvision's resnet34 with the same
weights (and the stride change), the optimized model against the reference port (outputs,
loss, gradients, detections) with one state dict, and the loss's edge cases.

Tolerances: float64 throughout, 1e-9 relative / 1e-10 absolute for outputs and losses, 1e-8 for
gradients (sums over thousands of terms in another order)."""
from __future__ import annotations

import copy

import pytest
import torch

from mlperf_fast.workloads.ssd import boxes as B
from mlperf_fast.workloads.ssd import reference as R
from mlperf_fast.workloads.ssd.config import CLOSED, EMBEDDED
from mlperf_fast.workloads.ssd.model import SSD, DetectionLoss, Trunk, from_reference, ssd_loss

F64 = {"rtol": 1e-9, "atol": 1e-10}


def _tv_resnet34(seed: int = 0):
    import torchvision

    torch.manual_seed(seed)
    rn = torchvision.models.resnet34(weights=None)
    # batch norm with non-trivial statistics, so that eval mode tests them too
    for m in rn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return rn.double().eval()


@pytest.mark.slow
def test_reference_trunk_is_torchvision_resnet34_with_layer3_at_stride_1(tmp_path):
    rn = _tv_resnet34()
    with torch.no_grad():
        # the sizes at 300 px (float32, shapes only): torchvision's 19 x 19, the trunk's 38 x 38
        rn32 = copy.deepcopy(rn).float()
        x300 = torch.randn(1, 3, 300, 300)
        plain = rn32.layer3(rn32.layer2(rn32.layer1(rn32.maxpool(rn32.relu(rn32.bn1(
            rn32.conv1(x300)))))))
        assert plain.shape == (1, 256, 19, 19)
        assert R.ResNet34Trunk(resnet=rn32).eval()(x300)[0].shape == (1, 256, 38, 38)
        # the values, in float64 at 128 px
        x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
        ref = R.ResNet34Trunk(resnet=copy.deepcopy(rn)).eval()
        (feat,) = ref(x)
        # the stride change by hand on torchvision's modules: layer3's first block, both convs
        l3 = copy.deepcopy(rn.layer3)
        l3[0].conv1.stride, l3[0].downsample[0].stride = (1, 1), (1, 1)
        hand = l3(rn.layer2(rn.layer1(rn.maxpool(rn.relu(rn.bn1(rn.conv1(x)))))))
        torch.testing.assert_close(feat, hand, **F64)
        # the optimized trunk loads torchvision's file by name and computes the same
        path = tmp_path / "resnet34.pth"
        torch.save(rn.state_dict(), path)
        model = SSD(81).double().eval()
        model.load_backbone(str(path))
        torch.testing.assert_close(model.backbone(x), feat, **F64)
    assert sum(p.numel() for p in Trunk().parameters()) == sum(
        p.numel() for n, p in rn.named_parameters() if n.split(".")[0] in
        ("conv1", "bn1", "layer1", "layer2", "layer3"))


def test_load_backbone_refuses_other_files(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="missing"):
        SSD(81).load_backbone(str(path))


@pytest.mark.slow
def test_closed_model_output_is_the_references():
    torch.manual_seed(0)
    ref = R.SSD300(81).double().eval()
    model = SSD(81).double().eval()
    model.load_state_dict(from_reference(ref, model))
    x = torch.randn(1, 3, 300, 300, dtype=torch.float64)
    with torch.no_grad():
        rl, rc = ref(x)
        ml, mc = model(x)
    perm = B.reference_permutation(CLOSED.feat_sizes, CLOSED.num_defaults)
    assert ml.shape == (1, 8732, 4) and mc.shape == (1, 8732, 81)
    torch.testing.assert_close(ml, rl.transpose(1, 2)[:, perm], **F64)
    torch.testing.assert_close(mc, rc.transpose(1, 2)[:, perm], **F64)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def _small_pair(cfg=EMBEDDED, seed: int = 0):
    """The embedded geometry in both implementations (the reference with a ResNet trunk of the
    same shape: model.py's trunk, whose parity with torchvision is tested above)."""
    torch.manual_seed(seed)
    trunk = Trunk(cfg.blocks, cfg.widths, cfg.stem)

    ref = R.SSD300(cfg.num_classes, trunk=R.FeatureList(trunk), trunk_channels=cfg.widths[-1],
                   extras=cfg.extras, num_defaults=cfg.num_defaults).double()
    model = SSD(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.extras,
                cfg.num_defaults).double()
    model.load_state_dict(from_reference(ref, model))
    return ref, model


def _targets(cfg, d_ref, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    enc = R.ReferenceEncoder(d_ref)
    gl, gb = [], []
    for b in range(batch):
        n = [3, 1, 6, 2][b % 4]
        xy = torch.rand(n, 2, generator=g) * 0.6
        box = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(n, 2, generator=g)], 1).clamp(max=1)
        lab = torch.randint(1, cfg.num_classes, (n,), generator=g)
        bx, lb = enc.encode(box.to(d_ref.dboxes.dtype), lab)
        gb.append(bx)
        gl.append(lb)
    return torch.stack(gb).transpose(1, 2).double(), torch.stack(gl)


def test_loss_and_gradients_are_the_references():
    cfg = EMBEDDED
    ref, model = _small_pair(cfg)
    ref.train(), model.train()
    d_ref = R.ReferenceDefaultBoxes(cfg.image_size, list(cfg.feat_sizes), list(cfg.steps),
                                    list(cfg.scales), [list(a) for a in cfg.aspect_ratios])
    d_ref.dboxes, d_ref.dboxes_ltrb = d_ref.dboxes.double(), d_ref.dboxes_ltrb.double()
    gloc_xywh, glabel = _targets(cfg, d_ref, 4, seed=3)
    x = torch.randn(4, 3, cfg.image_size, cfg.image_size, dtype=torch.float64)
    ref_loss_fn = R.ReferenceLoss(d_ref).double()
    rl, rc = ref(x)
    ref_loss = ref_loss_fn(rl, rc, gloc_xywh, glabel)
    ref_loss.backward()
    perm = B.reference_permutation(cfg.feat_sizes, cfg.num_defaults)
    gloc = ref_loss_fn._loc_vec(gloc_xywh).transpose(1, 2)[:, perm]
    loss = DetectionLoss(model)(x, gloc, glabel[:, perm])
    loss.backward()
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref_loss, **F64)
    mine = dict(model.named_parameters())
    theirs = from_reference_grads(ref, model)
    for name, grad in theirs.items():
        torch.testing.assert_close(mine[name].grad, grad, rtol=1e-8, atol=1e-10, msg=name)


def from_reference_grads(ref, model):
    """The reference's gradients under model.py's names (from_reference applied to .grad)."""
    saved = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(p.grad)
    out = {k: v.clone() for k, v in from_reference(ref, model).items()}
    ref.load_state_dict(saved)
    names = dict(model.named_parameters())
    return {k: v for k, v in out.items() if k in names}


def test_loss_edge_cases():
    b, a, c = 3, 50, 5
    g = torch.Generator().manual_seed(0)
    ploc = torch.randn(b, a, 4, generator=g, dtype=torch.float64, requires_grad=True)
    plabel = torch.randn(b, a, c, generator=g, dtype=torch.float64, requires_grad=True)
    gloc = torch.randn(b, a, 4, generator=g, dtype=torch.float64)
    glabel = torch.zeros(b, a, dtype=torch.int64)
    # no boxes anywhere: loss 0, gradients 0 (nothing selected)
    loss = ssd_loss(ploc, plabel, gloc, glabel)
    loss.backward()
    assert float(loss.detach()) == 0.0 and not ploc.grad.any() and not plabel.grad.any()
    # one image with boxes: the others contribute 0 to the batch mean
    glabel[1, :4] = torch.tensor([1, 2, 3, 4])
    full = ssd_loss(ploc, plabel, gloc, glabel)
    alone = ssd_loss(ploc[1:2], plabel[1:2], gloc[1:2], glabel[1:2])
    torch.testing.assert_close(full, alone / 3)
    # more positives than 3x negatives: every negative is mined (neg_num clamped at A)
    glabel[2, :40] = 1
    ref = R.ReferenceLoss.__new__(R.ReferenceLoss)
    torch.nn.Module.__init__(ref)
    ref.sl1_loss = torch.nn.SmoothL1Loss(reduction="none")
    ref.con_loss = torch.nn.CrossEntropyLoss(reduction="none")
    ref.scale_xy, ref.scale_wh = 10.0, 5.0
    ref._loc_vec = lambda x: x  # targets already encoded
    want = ref(ploc.transpose(1, 2), plabel.transpose(1, 2), gloc.transpose(1, 2), glabel)
    torch.testing.assert_close(ssd_loss(ploc, plabel, gloc, glabel), want, **F64)
    with pytest.raises(ValueError, match="shapes"):
        ssd_loss(ploc, plabel, gloc[:, :10], glabel)


def test_detections_are_the_references():
    cfg = EMBEDDED
    ref, model = _small_pair(cfg, seed=1)
    ref.eval(), model.eval()
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, dtype=torch.float64)
    with torch.no_grad():
        rl, rc = ref(x)
        ml, mc = model(x)
    d_ref = R.ReferenceDefaultBoxes(cfg.image_size, list(cfg.feat_sizes), list(cfg.steps),
                                    list(cfg.scales), [list(a) for a in cfg.aspect_ratios])
    want = R.ReferenceEncoder(d_ref).decode_batch(rl.float(), rc.float(), 0.5, 200)
    d = B.default_boxes(cfg.image_size, cfg.feat_sizes, cfg.steps, cfg.scales, cfg.aspect_ratios)
    det = B.decode_batch(ml.float(), mc.float(), d)
    for i in range(2):
        rb, rlab, rs = want[i]
        n = int(det.counts[i])
        assert n == len(rs)
        assert torch.equal(det.labels[i, :n].sort().values, rlab.sort().values)
        order = torch.argsort(rs, descending=True, stable=True)
        torch.testing.assert_close(det.scores[i, :n], rs[order], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(det.boxes[i, :n], rb[order], rtol=1e-4, atol=1e-5)
