"""The optimized SSD that the benchmark trains: SSD300 on a ResNet-34 trunk in the closed
configuration, a narrower and shallower one in the embedded configuration, one class for both.

Mathematically it is reference.py's SSD300 (checked weight for weight in tests/ssd): the same
trunk (torchvision's ResNet-34 through layer3, layer3's first block at stride 1), the same
additional blocks and heads, the same loss. What differs is how it runs:

- channels-last activations (NHWC), which cuDNN's tensor-core convolutions want; the heads'
  outputs are read in that layout, so that ``(N, H, W, nd * 4)`` is viewed as ``(N, H*W*nd, 4)``
  without a copy (the reference's ``view(N, 4, -1)`` of NCHW output costs a transpose of the
  largest tensors of the step, the 81-class confidences). The default boxes are listed in that
  order (boxes.py "hwd"); :func:`from_reference` permutes the heads' output channels to match.
- the loss takes targets already encoded in the loader's workers (boxes.encode), computes
  cross-entropy in float32 from the bf16 logits, and mines hard negatives for the whole batch
  with one sort (the rank of each box by a scatter of the sort's indices, where the reference
  sorts twice);
- bf16 autocast on CUDA (the step's ``amp_dtype``), float32 master weights.

Parameter names: the trunk's are torchvision's ResNet names under ``backbone.`` (so that a
torchvision resnet34 state dict, the pretrained backbone the rules ask for, loads by name);
``extras.i.0``/``extras.i.2`` are the reference's ``additional_blocks``; ``loc.i``/``conf.i``
its heads.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: 3x3 (stride) -> 3x3, plus the shortcut (a 1x1
    projection with batch norm where the stride or the width changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Trunk(nn.Module):
    """ResNet stem (7x7/2, max-pool 3/2) and three stages of basic blocks at strides 1, 2 and
    1 (the third stage's stride is the one SSD sets to 1): output stride 8. ResNet-34's:
    ``blocks=(3, 4, 6)``, ``widths=(64, 128, 256)``, ``stem=64``."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 6), widths: Sequence[int] = (64, 128, 256),
                 stem: int = 64) -> None:
        super().__init__()
        if len(blocks) != 3 or len(widths) != 3 or min(blocks) < 1 or min(widths) < 1 or stem < 1:
            raise ValueError(f"blocks {tuple(blocks)} and widths {tuple(widths)}: three stages "
                             "of >= 1 block and width >= 1, stem >= 1")
        self.conv1 = nn.Conv2d(3, stem, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        for s, (count, width, stride) in enumerate(zip(blocks, widths, (1, 2, 1))):
            units = [BasicBlock(cin if u == 0 else width, width, stride if u == 0 else 1)
                     for u in range(count)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*units))
            cin = width
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, padding=1)
        return self.layer3(self.layer2(self.layer1(x)))


class SSD(nn.Module):
    """SSD over :class:`Trunk`. Input (N, 3, H, W) normalized images (any float dtype, either
    memory format); output ``(ploc (N, A, 4), plabel (N, A, num_classes))`` in the trunk's
    dtype (bf16 under autocast), default boxes in boxes.py's "hwd" order.

    ``extras``: per additional block (1x1 channels, output channels, stride, padding) of its
    3x3 convolution; ``num_defaults``: default boxes per location on each of the 1 +
    len(extras) feature maps."""

    def __init__(self, num_classes: int = 81, blocks: Sequence[int] = (3, 4, 6),
                 widths: Sequence[int] = (64, 128, 256), stem: int = 64,
                 extras: Sequence[Sequence[int]] = ((256, 512, 2, 1), (256, 512, 2, 1),
                                                    (128, 256, 2, 1), (128, 256, 1, 0),
                                                    (128, 256, 1, 0)),
                 num_defaults: Sequence[int] = (4, 6, 6, 6, 4, 4),
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (the background and one class), got "
                             f"{num_classes}")
        if len(num_defaults) != len(extras) + 1:
            raise ValueError(f"{len(extras) + 1} feature maps need as many default-box counts, "
                             f"got {len(num_defaults)}")
        self.num_classes = num_classes
        self.num_defaults = tuple(num_defaults)
        self.backbone = Trunk(blocks, widths, stem)
        channels = [self.backbone.out_channels]
        ex = []
        for mid, cout, stride, padding in extras:
            ex.append(nn.Sequential(nn.Conv2d(channels[-1], mid, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(mid, cout, 3, stride, padding=padding),
                                    nn.ReLU(inplace=True)))
            channels.append(cout)
        self.extras = nn.ModuleList(ex)
        self.loc = nn.ModuleList(nn.Conv2d(c, nd * 4, 3, padding=1)
                                 for c, nd in zip(channels, num_defaults))
        self.conf = nn.ModuleList(nn.Conv2d(c, nd * num_classes, 3, padding=1)
                                  for c, nd in zip(channels, num_defaults))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The reference's initialization: torchvision's ResNet init for the trunk (Kaiming
        normal, fan-out, for convolutions; batch norm 1 and 0), Xavier uniform for every weight
        of the additional blocks and heads, PyTorch's default (uniform +-1/sqrt(fan_in)) for
        their biases."""
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in [*self.extras.modules(), *self.loc, *self.conf]:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)

    def load_backbone(self, path: str) -> None:
        """A torchvision ResNet state dict (a ``.pth`` file, e.g. resnet34-333f7ec4.pth): its
        conv1, bn1 and layer1-3 tensors into the trunk (layer4 and fc are not used)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"{path}: not a state dict")
        want = self.backbone.state_dict()
        picked = {k: v for k, v in state.items() if k in want}
        missing = [k for k in want if k not in picked and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"{path}: no {missing[0]} ({len(missing)} trunk tensors missing): "
                             "not a torchvision ResNet of this trunk's depth")
        bad = [k for k, v in picked.items() if v.shape != want[k].shape]
        if bad:
            raise ValueError(f"{path}: {bad[0]} has shape {tuple(picked[bad[0]].shape)}, the "
                             f"trunk's is {tuple(want[bad[0]].shape)}")
        self.backbone.load_state_dict(picked, strict=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        f = self.backbone(x)
        feats = [f]
        for block in self.extras:
            f = block(f)
            feats.append(f)
        n = x.shape[0]
        # NHWC outputs: (N, H, W, nd * k) -> (N, H*W*nd, k) is a view, no transpose
        locs = [h(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, f in zip(self.loc, feats)]
        confs = [h(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                 for h, f in zip(self.conf, feats)]
        return torch.cat(locs, 1), torch.cat(confs, 1)


def ssd_loss(ploc: torch.Tensor, plabel: torch.Tensor, gloc: torch.Tensor,
             glabel: torch.Tensor, neg_ratio: int = 3) -> torch.Tensor:
    """The reference's loss (reference.py ``ReferenceLoss``) for a batch, without loops.

    Args:
        ploc: (B, A, 4) predicted offsets; plabel: (B, A, C) logits (any float dtype).
        gloc: (B, A, 4) encoded targets (boxes.encode); glabel: (B, A) int64, 0 = background.
        neg_ratio: hard negatives per positive (3).
    Returns:
        the scalar loss (float32, float64 for float64 input): per image (smooth L1 over the positives' four offsets +
        cross-entropy over the positives and the ``neg_ratio * positives`` negatives of highest
        cross-entropy) / positives, 0 for an image without positives, averaged over the batch.
    """
    if ploc.dim() != 3 or ploc.shape[-1] != 4 or plabel.shape[:2] != ploc.shape[:2] \
            or gloc.shape != ploc.shape or glabel.shape != ploc.shape[:2]:
        raise ValueError(f"shapes ploc {tuple(ploc.shape)}, plabel {tuple(plabel.shape)}, gloc "
                         f"{tuple(gloc.shape)}, glabel {tuple(glabel.shape)}: expected (B, A, 4), "
                         "(B, A, C), (B, A, 4), (B, A)")
    b, a, c = plabel.shape
    mask = glabel > 0
    pos_num = mask.sum(dim=1)
    acc = torch.promote_types(plabel.dtype, torch.float32)  # float32 from bf16, float64 stays
    sl1 = F.smooth_l1_loss(ploc.to(acc), gloc.to(acc), reduction="none").sum(dim=2)
    sl1 = (sl1 * mask).sum(dim=1)
    con = F.cross_entropy(plabel.to(acc).reshape(b * a, c), glabel.reshape(b * a),
                          reduction="none").view(b, a)
    # the hardest negatives: rank every box by its loss (positives at 0) with one sort
    con_neg = con.detach().masked_fill(mask, 0.0)
    order = con_neg.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(a, device=order.device).expand(b, a))
    neg_mask = rank < torch.clamp(neg_ratio * pos_num, max=a)[:, None]
    closs = (con * (mask.to(con.dtype) + neg_mask.to(con.dtype))).sum(dim=1)
    total = sl1 + closs
    return (total * (pos_num > 0) / pos_num.to(total.dtype).clamp(min=1e-6)).mean()


class DetectionLoss(nn.Module):
    """The step's loss module: ``forward(images, gloc, glabel)`` -> :func:`ssd_loss` of the
    model's output."""

    def __init__(self, model: nn.Module, neg_ratio: int = 3) -> None:
        super().__init__()
        self.model = model
        self.neg_ratio = neg_ratio

    def forward(self, images: torch.Tensor, gloc: torch.Tensor,
                glabel: torch.Tensor) -> torch.Tensor:
        ploc, plabel = self.model(images)
        return ssd_loss(ploc, plabel, gloc, glabel, self.neg_ratio)


def from_reference(reference: nn.Module, model: SSD) -> dict[str, torch.Tensor]:
    """A reference.py SSD300's state as ``model``'s state dict: the trunk and additional blocks
    pair up tensor for tensor in order; the heads' output channels are permuted from the
    reference's coordinate-major ``k * nd + d`` to this model's ``d * k_total + k``."""
    ref = reference.state_dict()
    mine = model.state_dict()
    trunk_ref = [v for k, v in ref.items() if k.startswith("model.")]
    trunk_mine = [k for k in mine if k.startswith("backbone.")]
    if len(trunk_ref) != len(trunk_mine):
        raise ValueError(f"{len(trunk_ref)} reference trunk tensors for {len(trunk_mine)}")
    out = dict(zip(trunk_mine, trunk_ref))
    for k, v in ref.items():
        if k.startswith("additional_blocks."):
            out["extras." + k[len("additional_blocks."):]] = v
    for head, per in (("loc", 4), ("conf", model.num_classes)):
        for i, nd in enumerate(model.num_defaults):
            # mine[d * per + k] = ref[k * nd + d]
            idx = torch.arange(nd * per).view(per, nd).t().reshape(-1)
            for p in ("weight", "bias"):
                out[f"{head}.{i}.{p}"] = ref[f"{head}.{i}.{p}"][idx]
    for k, v in out.items():
        if k not in mine or v.shape != mine[k].shape:
            raise ValueError(f"{k}: shape {tuple(v.shape)} does not fit the model")
    return out
