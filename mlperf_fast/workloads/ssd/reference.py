"""The MLCommons reference SSD300 (MLPerf Training v1.0, single_stage_detector; now
mlcommons/training retired_benchmarks/ssd-v1/ssd), ported: the parity oracle of model.py and
boxes.py. Plain PyTorch, written for clarity, with the reference's loops where it has them.

- ``ResNet34Trunk`` (base_model.py ``ResNet34``): torchvision's resnet34 through layer3 (its
  children ``[:6]`` then ``[6:7]``), the first block of layer3 with stride 1 in its first 3x3
  convolution and in its 1x1 projection: a 38 x 38 map of 256 channels at 300 px.
- ``SSD300`` (ssd300.py): five additional blocks (1x1 then a 3x3, ReLU after each; stride 2 and
  padding 1 for the first three, no padding for the last two) to 19, 10, 5, 3 and 1, and a 3x3
  location and confidence head on each of the six maps (4, 6, 6, 6, 4, 4 default boxes per
  location); Xavier-uniform initialization of every weight of those (biases keep PyTorch's
  default), outputs ``(N, 4, 8732)`` and ``(N, label_num, 8732)``.
- ``ReferenceDefaultBoxes`` / ``ReferenceEncoder`` (utils.py ``DefaultBoxes`` / ``Encoder``):
  per-image matching and the decoder with its per-class NMS loop.
- ``ReferenceLoss`` (base_model.py ``Loss``): smooth L1 on the encoded positives plus
  cross-entropy on the positives and the 3x hardest negatives, divided by each image's positive
  count, averaged over the batch (images without positives contribute 0).

Departures, each the least that makes the port run here: the reference loads ImageNet weights
from torchvision's download (``resnet34(pretrained=True)``) where this port takes a file or none
(random init); ``reduce=False`` is ``reduction="none"``; an image without a single candidate
returns empty detections where the reference's ``torch.cat([])`` raised (and its evaluation
skipped the whole batch); the geometry is parametrized so that the embedded configuration's
smaller SSD has a reference too.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from math import sqrt

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# -- the network ------------------------------------------------------------------------------
class ResNet34Trunk(nn.Module):
    """base_model.py ``ResNet34``: ``layer1`` = conv1, bn1, relu, maxpool, layer1, layer2 of a
    torchvision ResNet-34; ``layer2`` = its layer3 with the first block's stride set to 1."""

    def __init__(self, weights: str | None = None, resnet: nn.Module | None = None) -> None:
        super().__init__()
        import torchvision

        rn = resnet if resnet is not None else torchvision.models.resnet34(weights=None)
        if weights is not None:
            rn.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.layer1 = nn.Sequential(*list(rn.children())[:6])
        self.layer2 = nn.Sequential(*list(rn.children())[6:7])
        block = next(iter(self.layer2.children()))[0]
        block.conv1.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)

    def forward(self, data: torch.Tensor) -> list[torch.Tensor]:
        return [self.layer2(self.layer1(data))]


def _extra(cin: int, mid: int, cout: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, kernel_size=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, kernel_size=3, padding=padding, stride=stride),
                         nn.ReLU(inplace=True))


#: ssd300.py's additional blocks: (1x1 channels, output channels, stride, padding)
SSD300_EXTRAS = ((256, 512, 2, 1), (256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0),
                 (128, 256, 1, 0))
SSD300_DEFAULTS = (4, 6, 6, 6, 4, 4)


class FeatureList(nn.Module):
    """``trunk`` (a module returning one feature map) in the form SSD300 takes its trunk:
    returning ``[features]``. Used to put the reference's head over a smaller trunk (the
    embedded geometry)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.t = trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.t(x)]


class SSD300(nn.Module):
    """ssd300.py ``SSD300``. ``trunk``: a module returning ``[features]`` (default: the
    ResNet-34 trunk), ``trunk_channels`` its channels; ``extras``/``num_defaults``: the
    geometry (default: SSD300's)."""

    def __init__(self, label_num: int, trunk: nn.Module | None = None, trunk_channels: int = 256,
                 extras: Sequence[tuple[int, int, int, int]] = SSD300_EXTRAS,
                 num_defaults: Sequence[int] = SSD300_DEFAULTS) -> None:
        super().__init__()
        self.label_num = label_num
        self.model = trunk if trunk is not None else ResNet34Trunk()
        self.out_chan = [trunk_channels] + [e[1] for e in extras]
        blocks, cin = [], trunk_channels
        for mid, cout, stride, padding in extras:
            blocks.append(_extra(cin, mid, cout, stride, padding))
            cin = cout
        self.additional_blocks = nn.ModuleList(blocks)
        self.num_defaults = list(num_defaults)
        if len(self.num_defaults) != len(self.out_chan):
            raise ValueError(f"{len(self.out_chan)} feature maps, {len(self.num_defaults)} "
                             "default-box counts")
        self.loc = nn.ModuleList(nn.Conv2d(oc, nd * 4, kernel_size=3, padding=1)
                                 for nd, oc in zip(self.num_defaults, self.out_chan))
        self.conf = nn.ModuleList(nn.Conv2d(oc, nd * label_num, kernel_size=3, padding=1)
                                  for nd, oc in zip(self.num_defaults, self.out_chan))
        self._init_weights()

    def _init_weights(self) -> None:
        for layer in [*self.additional_blocks, *self.loc, *self.conf]:
            for param in layer.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    def bbox_view(self, src, loc, conf):
        ret = []
        for s, l, c in zip(src, loc, conf):
            ret.append((l(s).view(s.size(0), 4, -1), c(s).view(s.size(0), self.label_num, -1)))
        locs, confs = list(zip(*ret))
        return torch.cat(locs, 2).contiguous(), torch.cat(confs, 2).contiguous()

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.model(data)
        x = layers[-1]
        additional = []
        for block in self.additional_blocks:
            x = block(x)
            additional.append(x)
        return self.bbox_view([*layers, *additional], self.loc, self.conf)


# -- boxes ------------------------------------------------------------------------------------
def calc_iou_tensor(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """utils.py ``calc_iou_tensor``: (N, 4) x (M, 4) ltrb -> (N, M)."""
    n, m = box1.size(0), box2.size(0)
    be1 = box1.unsqueeze(1).expand(-1, m, -1)
    be2 = box2.unsqueeze(0).expand(n, -1, -1)
    lt = torch.max(be1[:, :, :2], be2[:, :, :2])
    rb = torch.min(be1[:, :, 2:], be2[:, :, 2:])
    delta = rb - lt
    delta[delta < 0] = 0
    intersect = delta[:, :, 0] * delta[:, :, 1]
    delta1 = be1[:, :, 2:] - be1[:, :, :2]
    area1 = delta1[:, :, 0] * delta1[:, :, 1]
    delta2 = be2[:, :, 2:] - be2[:, :, :2]
    area2 = delta2[:, :, 0] * delta2[:, :, 1]
    return intersect / (area1 + area2 - intersect)


class ReferenceDefaultBoxes:
    """utils.py ``DefaultBoxes`` (d-major order, xywh clamped to [0, 1])."""

    def __init__(self, fig_size, feat_size, steps, scales, aspect_ratios, scale_xy=0.1,
                 scale_wh=0.2) -> None:
        self.feat_size, self.fig_size = feat_size, fig_size
        self.scale_xy, self.scale_wh = scale_xy, scale_wh
        self.steps, self.scales, self.aspect_ratios = steps, scales, aspect_ratios
        fk = fig_size / np.array(steps)
        boxes = []
        for idx, sfeat in enumerate(self.feat_size):
            sk1 = scales[idx] / fig_size
            sk2 = scales[idx + 1] / fig_size
            sk3 = sqrt(sk1 * sk2)
            all_sizes = [(sk1, sk1), (sk3, sk3)]
            for alpha in aspect_ratios[idx]:
                w, h = sk1 * sqrt(alpha), sk1 / sqrt(alpha)
                all_sizes.append((w, h))
                all_sizes.append((h, w))
            for w, h in all_sizes:
                for i, j in itertools.product(range(sfeat), repeat=2):
                    boxes.append(((j + 0.5) / fk[idx], (i + 0.5) / fk[idx], w, h))
        self.dboxes = torch.tensor(boxes, dtype=torch.float)
        self.dboxes.clamp_(min=0, max=1)
        self.dboxes_ltrb = self.dboxes.clone()
        self.dboxes_ltrb[:, 0] = self.dboxes[:, 0] - 0.5 * self.dboxes[:, 2]
        self.dboxes_ltrb[:, 1] = self.dboxes[:, 1] - 0.5 * self.dboxes[:, 3]
        self.dboxes_ltrb[:, 2] = self.dboxes[:, 0] + 0.5 * self.dboxes[:, 2]
        self.dboxes_ltrb[:, 3] = self.dboxes[:, 1] + 0.5 * self.dboxes[:, 3]

    def __call__(self, order: str = "ltrb") -> torch.Tensor:
        return self.dboxes_ltrb if order == "ltrb" else self.dboxes


def dboxes300_coco() -> ReferenceDefaultBoxes:
    """train.py ``dboxes300_coco``."""
    return ReferenceDefaultBoxes(300, [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300],
                                 [21, 45, 99, 153, 207, 261, 315],
                                 [[2], [2, 3], [2, 3], [2, 3], [2], [2]])


class ReferenceEncoder:
    """utils.py ``Encoder``: ``encode`` one image's ltrb boxes to (8732, 4) xywh boxes and
    labels; ``decode_batch`` the network's output to per-image (boxes ltrb, labels, scores)."""

    def __init__(self, dboxes: ReferenceDefaultBoxes) -> None:
        self.dboxes = dboxes(order="ltrb")
        self.dboxes_xywh = dboxes(order="xywh").unsqueeze(dim=0)
        self.nboxes = self.dboxes.size(0)
        self.scale_xy, self.scale_wh = dboxes.scale_xy, dboxes.scale_wh

    def encode(self, bboxes_in: torch.Tensor, labels_in: torch.Tensor, criteria: float = 0.5):
        ious = calc_iou_tensor(bboxes_in, self.dboxes)
        best_dbox_ious, best_dbox_idx = ious.max(dim=0)
        _best_bbox_ious, best_bbox_idx = ious.max(dim=1)
        best_dbox_ious.index_fill_(0, best_bbox_idx, 2.0)
        idx = torch.arange(0, best_bbox_idx.size(0), dtype=torch.int64)
        best_dbox_idx[best_bbox_idx[idx]] = idx
        masks = best_dbox_ious > criteria
        labels_out = torch.zeros(self.nboxes, dtype=torch.long)
        labels_out[masks] = labels_in[best_dbox_idx[masks]]
        bboxes_out = self.dboxes.clone()
        bboxes_out[masks, :] = bboxes_in[best_dbox_idx[masks], :]
        x = 0.5 * (bboxes_out[:, 0] + bboxes_out[:, 2])
        y = 0.5 * (bboxes_out[:, 1] + bboxes_out[:, 3])
        w = -bboxes_out[:, 0] + bboxes_out[:, 2]
        h = -bboxes_out[:, 1] + bboxes_out[:, 3]
        bboxes_out[:, 0], bboxes_out[:, 1], bboxes_out[:, 2], bboxes_out[:, 3] = x, y, w, h
        return bboxes_out, labels_out

    def scale_back_batch(self, bboxes_in: torch.Tensor, scores_in: torch.Tensor):
        d_xywh = self.dboxes_xywh.to(bboxes_in.device)
        bboxes_in = bboxes_in.permute(0, 2, 1).clone()
        scores_in = scores_in.permute(0, 2, 1)
        bboxes_in[:, :, :2] = self.scale_xy * bboxes_in[:, :, :2]
        bboxes_in[:, :, 2:] = self.scale_wh * bboxes_in[:, :, 2:]
        bboxes_in[:, :, :2] = bboxes_in[:, :, :2] * d_xywh[:, :, 2:] + d_xywh[:, :, :2]
        bboxes_in[:, :, 2:] = bboxes_in[:, :, 2:].exp() * d_xywh[:, :, 2:]
        l = bboxes_in[:, :, 0] - 0.5 * bboxes_in[:, :, 2]
        t = bboxes_in[:, :, 1] - 0.5 * bboxes_in[:, :, 3]
        r = bboxes_in[:, :, 0] + 0.5 * bboxes_in[:, :, 2]
        b = bboxes_in[:, :, 1] + 0.5 * bboxes_in[:, :, 3]
        return torch.stack([l, t, r, b], -1), F.softmax(scores_in, dim=-1)

    def decode_batch(self, bboxes_in, scores_in, criteria=0.45, max_output=200,
                     nms_valid_thresh=0.05):
        bboxes, probs = self.scale_back_batch(bboxes_in, scores_in)
        return [self.decode_single(bbox, prob, criteria, max_output,
                                   nms_valid_thresh=nms_valid_thresh)
                for bbox, prob in zip(bboxes, probs)]

    def decode_single(self, bboxes_in, scores_in, criteria, max_output, max_num=200,
                      nms_valid_thresh=0.05):
        bboxes_out, scores_out, labels_out = [], [], []
        for i, score in enumerate(scores_in.split(1, 1)):
            if i == 0:
                continue  # the background
            score = score.squeeze(1)
            mask = score > nms_valid_thresh
            bboxes, score = bboxes_in[mask, :], score[mask]
            if score.size(0) == 0:
                continue
            _, score_idx_sorted = score.sort(dim=0)
            score_idx_sorted = score_idx_sorted[-max_num:]
            candidates = []
            while score_idx_sorted.numel() > 0:
                idx = score_idx_sorted[-1].item()
                bboxes_sorted = bboxes[score_idx_sorted, :]
                bboxes_idx = bboxes[idx, :].unsqueeze(dim=0)
                iou_sorted = calc_iou_tensor(bboxes_sorted, bboxes_idx).squeeze(1)
                score_idx_sorted = score_idx_sorted[iou_sorted < criteria]
                candidates.append(idx)
            bboxes_out.append(bboxes[candidates, :])
            scores_out.append(score[candidates])
            labels_out.extend([i] * len(candidates))
        if not bboxes_out:
            return (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
        bboxes_out = torch.cat(bboxes_out, dim=0)
        labels_out = torch.tensor(labels_out, dtype=torch.long)
        scores_out = torch.cat(scores_out, dim=0)
        _, max_ids = scores_out.sort(dim=0)
        max_ids = max_ids[-max_output:]
        return bboxes_out[max_ids, :], labels_out[max_ids], scores_out[max_ids]


# -- the loss ---------------------------------------------------------------------------------
class ReferenceLoss(nn.Module):
    """base_model.py ``Loss``: forward(ploc (N, 4, A), plabel (N, C, A), gloc (N, 4, A) xywh
    ground truth per default box, glabel (N, A)) -> the batch's mean loss."""

    def __init__(self, dboxes: ReferenceDefaultBoxes) -> None:
        super().__init__()
        self.scale_xy = 1.0 / dboxes.scale_xy
        self.scale_wh = 1.0 / dboxes.scale_wh
        self.sl1_loss = nn.SmoothL1Loss(reduction="none")
        self.dboxes = nn.Parameter(dboxes(order="xywh").transpose(0, 1).unsqueeze(dim=0),
                                   requires_grad=False)
        self.con_loss = nn.CrossEntropyLoss(reduction="none")

    def _loc_vec(self, loc: torch.Tensor) -> torch.Tensor:
        gxy = self.scale_xy * (loc[:, :2, :] - self.dboxes[:, :2, :]) / self.dboxes[:, 2:, ]
        gwh = self.scale_wh * (loc[:, 2:, :] / self.dboxes[:, 2:, :]).log()
        return torch.cat((gxy, gwh), dim=1).contiguous()

    def forward(self, ploc, plabel, gloc, glabel):
        mask = glabel > 0
        pos_num = mask.sum(dim=1)
        vec_gd = self._loc_vec(gloc)
        sl1 = self.sl1_loss(ploc, vec_gd).sum(dim=1)
        sl1 = (mask.float() * sl1).sum(dim=1)
        con = self.con_loss(plabel, glabel)
        con_neg = con.clone()
        con_neg[mask] = 0
        _, con_idx = con_neg.sort(dim=1, descending=True)
        _, con_rank = con_idx.sort(dim=1)
        neg_num = torch.clamp(3 * pos_num, max=mask.size(1)).unsqueeze(-1)
        neg_mask = con_rank < neg_num
        closs = (con * (mask.float() + neg_mask.float())).sum(dim=1)
        total_loss = sl1 + closs
        num_mask = (pos_num > 0).float()
        pos_num = pos_num.float().clamp(min=1e-6)
        return (total_loss * num_mask / pos_num).mean(dim=0)
