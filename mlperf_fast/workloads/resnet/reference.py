"""A PyTorch port of the MLPerf Training reference's ResNet-50 v1.5 (mlcommons/training,
image_classification/tensorflow2/resnet_model.py, retired since into retired_benchmarks/): what
the optimized model (model.py) is checked against, and the baseline of its step benchmark.

What the port keeps from the reference, as read there:

- layout: a 7x7/2 stem convolution (ZeroPadding2D(3) then a valid convolution), batch norm,
  ReLU, a 3x3/2 max pool ('same'); stages 2-5 of (3, 4, 6, 3) bottleneck blocks of widths 64,
  128, 256, 512 (x4 out); v1.5: the stride of a stage's first block is on its 3x3 convolution
  (``conv_block(..., strides)`` puts it on ``2b`` and on the shortcut ``1``); the global mean,
  a 1000-way dense layer. The layer names below are the reference's Keras names
  (``res3a_branch2b``, ``bn3a_branch2b``, ``fc1000``, ...).
- batch norm: momentum 0.9 in Keras' sense (``BATCH_NORM_DECAY``; PyTorch's momentum 0.1), epsilon
  1e-5 (``BATCH_NORM_EPSILON``), gamma 1 and beta 0 at the start (Keras' defaults).
- initialization: every convolution ``he_normal`` (Keras' VarianceScaling(2, fan_in,
  truncated_normal): a normal of std sqrt(2 / fan_in) / 0.8796 truncated at two of its
  standard deviations); the dense layer's kernel RandomNormal(stddev=0.01), its bias zeros.
- no biases on convolutions; the softmax is left to the loss (the reference applies it in
  float32 at the end of the model and its loss takes probabilities: the same mathematics).

Padding. TensorFlow's 'same' padding of a stride-2 layer over an even input pads one row and
column at the bottom/right only, where PyTorch (and torchvision's resnet50, and NVIDIA's
submissions) pad one on each side. ``padding="tf"`` reproduces the reference exactly (the 3x3/2
convolutions and the max pool); ``padding="torch"`` (the default) is the symmetric form, which
makes the port equal to ``torchvision.models.resnet50`` weight for weight (tests/resnet check
both). The closed rules do not fix the padding; the optimized model uses the symmetric form.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: [ref] resnet_model.py: BATCH_NORM_DECAY = 0.9 (Keras' momentum = 1 - PyTorch's)
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5  # [ref] BATCH_NORM_EPSILON
#: [ref] resnet50(): conv_block/identity_block calls per stage, and their filters
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4
PADDINGS = ("torch", "tf")


def he_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras' ``he_normal``: truncated normal (cut at 2 std) of std sqrt(2 / fan_in) / 0.8796,
    so that the truncated distribution's own std is sqrt(2 / fan_in)."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


def reference_init_(model: nn.Module, head: nn.Linear,
                     generator: torch.Generator | None = None) -> None:
    """The reference's initialization of a ResNet: every convolution ``he_normal``, batch norm
    gamma 1 and beta 0, the dense ``head`` N(0, 0.01) with a zero bias. Modules are visited in
    ``model.modules()`` order, so models that list their layers alike draw the same weights."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            he_normal_(m.weight, generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one spatial dimension: (before, after)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Conv(nn.Conv2d):
    """A bias-free convolution with 'same' padding in either convention."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: str) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, bias=False)
        self.tf = padding == "tf"
        self.sym = (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if self.tf:
            (t, b), (left, r) = _same_pad(x.shape[-2], k, s), _same_pad(x.shape[-1], k, s)
            pad = (left, r, t, b)
        else:
            pad = (self.sym,) * 4
        if any(pad):
            x = F.pad(x, pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class ReferenceBottleneck(nn.Module):
    """``conv_block`` (with the projection shortcut ``1``) or ``identity_block``."""

    def __init__(self, cin: int, width: int, stride: int, projection: bool, name: str,
                 padding: str) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.name = name  # e.g. "3a": res3a_branch2a, bn3a_branch2a, ...
        self.branch2a = _Conv(cin, width, 1, 1, padding)
        self.bn2a = _bn(width)
        self.branch2b = _Conv(width, width, 3, stride, padding)
        self.bn2b = _bn(width)
        self.branch2c = _Conv(width, cout, 1, 1, padding)
        self.bn2c = _bn(cout)
        self.branch1 = _Conv(cin, cout, 1, stride, padding) if projection else None
        self.bn1 = _bn(cout) if projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn2a(self.branch2a(x)))
        y = F.relu(self.bn2b(self.branch2b(y)))
        y = self.bn2c(self.branch2c(y))
        shortcut = x if self.branch1 is None else self.bn1(self.branch1(x))
        return F.relu(y + shortcut)


class ReferenceResNet50(nn.Module):
    """ResNet-50 v1.5 as the reference builds it. Input: (N, 3, H, W) float32 images, already
    normalized by the input pipeline; output: (N, num_classes) float32 logits."""

    def __init__(self, num_classes: int = 1000, padding: str = "torch",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.padding = padding
        self.conv1 = _Conv(3, 64, 7, 2, "torch")  # ZeroPadding2D(3) + 'valid': symmetric 3
        self.bn_conv1 = _bn(64)
        blocks, cin = [], 64
        for stage, (count, width) in enumerate(STAGES, start=2):
            for i in range(count):
                stride = 2 if i == 0 and stage > 2 else 1  # stage 2's conv_block: strides (1, 1)
                blocks.append(ReferenceBottleneck(cin, width, stride, i == 0,
                                                  f"{stage}{'abcdef'[i]}", padding))
                cin = width * EXPANSION
        self.blocks = nn.ModuleList(blocks)
        self.fc1000 = nn.Linear(cin, num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        reference_init_(self, self.fc1000, generator)

    def _max_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "tf":  # 'same': the padding never wins the max
            (t, b), (left, r) = _same_pad(x.shape[-2], 3, 2), _same_pad(x.shape[-1], 3, 2)
            x = F.pad(x, (left, r, t, b), value=-math.inf)
            return F.max_pool2d(x, 3, 2)
        return F.max_pool2d(x, 3, 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._max_pool(F.relu(self.bn_conv1(self.conv1(x))))
        for block in self.blocks:
            x = block(x)
        return self.fc1000(x.mean(dim=(2, 3)))


def torchvision_state_dict(model: ReferenceResNet50) -> dict[str, torch.Tensor]:
    """The port's weights (and batch-norm buffers) under torchvision's resnet50 names."""
    out: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            out[f"{prefix}.{k}"] = v

    put("conv1", model.conv1)
    put("bn1", model.bn_conv1)
    i = 0
    for layer, (count, _) in enumerate(STAGES, start=1):
        for j in range(count):
            b = model.blocks[i]
            p = f"layer{layer}.{j}"
            for ours, theirs in (("branch2a", "conv1"), ("bn2a", "bn1"), ("branch2b", "conv2"),
                                 ("bn2b", "bn2"), ("branch2c", "conv3"), ("bn2c", "bn3")):
                put(f"{p}.{theirs}", getattr(b, ours))
            if b.branch1 is not None:
                put(f"{p}.downsample.0", b.branch1)
                put(f"{p}.downsample.1", b.bn1)
            i += 1
    put("fc", model.fc1000)
    return out


def reference_loss(logits: torch.Tensor, labels: torch.Tensor,
                   label_smoothing: float = 0.1) -> torch.Tensor:
    """The reference's loss: categorical cross-entropy on one-hot labels smoothed by
    ``label_smoothing`` (Keras: y (1 - s) + s / C), summed and divided by the batch
    (resnet_runnable.py ``local_step``), in float32."""
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, label_smoothing=label_smoothing)
