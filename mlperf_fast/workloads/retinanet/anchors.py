"""RetinaNet's anchors, as the MLCommons reference makes them (model/anchor_utils.py
``AnchorGenerator``, the same as torchvision's): per pyramid level, ``scales x ratios`` base
anchors centred on 0 and rounded to whole pixels, shifted to every location of the level's grid
at the stride ``image_size // grid_size`` (integer division: 800 // 13 = 61 for P6, 800 // 7 =
114 for P7, not 64 and 128), locations row by row, the base anchors innermost.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def level_sizes(base_sizes: Sequence[int], scales: int = 3) -> list[tuple[int, ...]]:
    """The anchor sizes of each level: ``(x, int(x * 2^(1/3)), int(x * 2^(2/3)))`` for 3 scales
    ([ref] model/retinanet.py), truncated to integers as the reference does."""
    return [tuple(int(x * 2 ** (i / scales)) for i in range(scales)) for x in base_sizes]


def cell_anchors(sizes: Sequence[int], aspect_ratios: Sequence[float],
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(ratios) * len(sizes), 4) base anchors (x1, y1, x2, y2) around 0, rounded; ratio =
    height / width, ratios outer, sizes inner ([ref] ``generate_anchors``)."""
    scales = torch.as_tensor(sizes, dtype=dtype)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_sizes(image_size: tuple[int, int], returned_layers: Sequence[int],
               extra_levels: bool) -> list[tuple[int, int]]:
    """The feature grid of each pyramid level for an input of ``image_size`` (H, W): the
    backbone's stem (7x7/2 conv, 3x3/2 max pool: /4) and one stride-2 stage per layer after
    layer1, each a 'same'-padded 3x3/2 convolution (``ceil(n / 2)``); P6 and P7 likewise."""
    def down(n: int, times: int) -> int:
        for _ in range(times):
            n = (n - 1) // 2 + 1  # a 3x3 (or 7x7) stride-2 convolution or pool, padded
        return n

    h, w = image_size
    out = [(down(h, k + 1), down(w, k + 1)) for k in returned_layers]
    if extra_levels:
        for _ in range(2):
            gh, gw = out[-1]
            out.append((down(gh, 1), down(gw, 1)))
    return out


def anchors_for(image_size: tuple[int, int], grids: Sequence[tuple[int, int]],
                base_sizes: Sequence[int], aspect_ratios: Sequence[float], scales: int = 3,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, list[int]]:
    """All anchors of one image, (A, 4) (x1, y1, x2, y2), level by level, and the count of each
    level. ``grids``: each level's (height, width)."""
    out, counts = [], []
    for (gh, gw), sizes in zip(grids, level_sizes(base_sizes, scales)):
        base = cell_anchors(sizes, aspect_ratios, torch.float32).to(device=device, dtype=dtype)
        sh, sw = image_size[0] // gh, image_size[1] // gw
        shifts_x = torch.arange(0, gw, dtype=torch.float32, device=device) * sw
        shifts_y = torch.arange(0, gh, dtype=torch.float32, device=device) * sh
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1).to(dtype)
        level = (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
        out.append(level)
        counts.append(level.shape[0])
    return torch.cat(out), counts
