"""The optimized ResNet (v1.5 bottlenecks) that the benchmark trains: ResNet-50 in the closed
configuration, a narrower and shallower one in the embedded configuration, one class for both.

Mathematically it is reference.py's model (symmetric padding; the same initialization, batch
norm and head), checked weight for weight in tests/resnet. What differs is how it runs:

- channels-last activations (NHWC), which cuDNN's tensor-core convolutions want: ``forward``
  converts its input once and every convolution then keeps the format (the weights stay
  contiguous, as FusedLARS's multi-tensor kernels take them);
- on CUDA the loss module is compiled (torch.compile, inductor): batch norm's normalization,
  the ReLU and the residual add become one elementwise kernel after each convolution instead of
  three passes over the activations, which is where a ResNet step spends its memory traffic;
- bf16 autocast on CUDA (the step's ``amp_dtype``), float32 master weights, FusedLARS
  (optim/lars.py) over every parameter at once.

Parameter names follow the closed rules' ``weights_initialization`` tensors (mlperf-logging
training_2.1.0/closed_resnet.yaml: ``conv0_weight``, ``bn0_gamma``,
``stage1_unit1_conv1sc_weight``, ..., ``fc1_bias``): :func:`initialization_tensors` derives that
list from the module names.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlperf_fast.workloads.resnet.reference import BN_EPSILON, BN_MOMENTUM, reference_init_


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class Unit(nn.Module):
    """One bottleneck: 1x1 -> 3x3 (stride here: v1.5) -> 1x1, plus the shortcut (a strided 1x1
    projection in a stage's first unit)."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, projection: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        if projection:
            self.conv1sc = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.bnsc = _bn(cout)
        else:
            self.conv1sc = self.bnsc = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.conv1sc is None else self.bnsc(self.conv1sc(x))
        return F.relu(y + shortcut)


class ResNet(nn.Module):
    """Input (N, 3, H, W) normalized images (any float dtype, either memory format); output
    (N, num_classes) logits. ``blocks``/``widths``: units and bottleneck widths per stage
    (ResNet-50: (3, 4, 6, 3) and (64, 128, 256, 512)); ``stem``: the stem's channels."""

    def __init__(self, num_classes: int = 1000, blocks: Sequence[int] = (3, 4, 6, 3),
                 widths: Sequence[int] = (64, 128, 256, 512), stem: int = 64,
                 expansion: int = 4, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
            raise ValueError(f"blocks {tuple(blocks)} and widths {tuple(widths)}: one count >= 1 "
                             "and one width >= 1 per stage")
        if num_classes < 1 or stem < 1 or expansion < 1:
            raise ValueError("num_classes, stem and expansion must be >= 1")
        self.conv0 = nn.Conv2d(3, stem, 7, 2, padding=3, bias=False)
        self.bn0 = _bn(stem)
        stages, cin = [], stem
        for s, (count, width) in enumerate(zip(blocks, widths)):
            units = []
            for u in range(count):
                stride = 2 if u == 0 and s > 0 else 1
                units.append(Unit(cin, width, width * expansion, stride, u == 0))
                cin = width * expansion
            stages.append(nn.Sequential(*units))
        self.stages = nn.ModuleList(stages)
        self.fc1 = nn.Linear(cin, num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The reference's initialization (reference.py)."""
        reference_init_(self, self.fc1, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.bn0(self.conv0(x))), 3, 2, padding=1)
        for stage in self.stages:
            x = stage(x)
        return self.fc1(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ClassificationLoss(nn.Module):
    """The step's loss module: mean label-smoothed cross-entropy of (images, labels), computed
    in float32 from the (possibly bf16) logits."""

    def __init__(self, model: nn.Module, label_smoothing: float) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, label_smoothing=self.label_smoothing)


def initialization_tensors(model: ResNet) -> list[str]:
    """The model's parameters by the closed rules' names: ``stages.0.0.conv1.weight`` is
    ``stage1_unit1_conv1_weight``, batch norm's weight/bias are ``gamma``/``beta``."""
    names = []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "stages":
            parts = [f"stage{int(parts[1]) + 1}", f"unit{int(parts[2]) + 1}"] + parts[3:]
        if parts[-2].startswith("bn"):
            parts[-1] = {"weight": "gamma", "bias": "beta"}[parts[-1]]
        names.append("_".join(parts))
    return names


def from_reference(reference: nn.Module) -> dict[str, torch.Tensor]:
    """A reference.py ResNet-50's state (weights and batch-norm buffers) as this model's state
    dict: both list their layers in the same order (stem, then each block's 1x1, 3x3, 1x1 and
    projection with their batch norms, then the head), so the tensors pair up one to one."""
    with torch.device("meta"):
        mine = ResNet(num_classes=reference.fc1000.out_features).state_dict()
    theirs = list(reference.state_dict().values())
    if len(theirs) != len(mine):
        raise ValueError(f"{len(theirs)} reference tensors for {len(mine)} of this model's")
    out = {}
    for (name, want), value in zip(mine.items(), theirs):
        if value.shape != want.shape:
            raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {tuple(want.shape)}")
        out[name] = value
    return out
