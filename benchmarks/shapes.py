"""Parameter sets of real models, shared by the optimizer and norm benchmarks.

Shapes only: tensors are made with random (never zero) values on the GPU when a benchmark runs.
"""
from __future__ import annotations

import torch


def bert_large_shapes(pooler: bool = False) -> list[tuple[int, ...]]:
    """BERT-large (MLPerf: vocab 30522, 512 positions, 24 layers, hidden 1024, MLM + NSP heads):
    335,176,508 parameters in 396 tensors; with the pooler, 336,226,108 in 398."""
    h, ff, layers = 1024, 4096, 24
    shapes: list[tuple[int, ...]] = [(30522, h), (512, h), (2, h), (h,), (h,)]
    for _ in range(layers):
        shapes += [(h, h), (h,)] * 4            # query, key, value, attention output
        shapes += [(h,), (h,)]                  # attention LayerNorm
        shapes += [(ff, h), (ff,), (h, ff), (h,)]
        shapes += [(h,), (h,)]                  # output LayerNorm
    if pooler:
        shapes += [(h, h), (h,)]
    shapes += [(h, h), (h,), (h,), (h,), (30522,)]  # MLM transform, its LayerNorm, decoder bias
    shapes += [(2, h), (2,)]                    # next-sentence head
    return shapes


def resnet50_shapes() -> list[tuple[int, ...]]:
    """ResNet-50 v1.5: 25,557,032 parameters in 161 tensors (conv weights, BN weight and bias, fc)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if b == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(1000, 2048), (1000,)]
    return shapes


def make(shapes: list[tuple[int, ...]], dtype: torch.dtype = torch.float32,
         device: str = "cuda", seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(seed)
    return [torch.empty(s, dtype=dtype, device=device).uniform_(0.1, 1.0, generator=gen)
            for s in shapes]


def params_with_grads(shapes: list[tuple[int, ...]], dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> list[torch.nn.Parameter]:
    """Parameters of these shapes (from ``seed``) with gradients (from ``seed + 1``)."""
    params = [torch.nn.Parameter(t) for t in make(shapes, dtype, seed=seed)]
    for p, g in zip(params, make(shapes, dtype, seed=seed + 1)):
        p.grad = g
    return params


def numel(shapes: list[tuple[int, ...]]) -> int:
    return sum(torch.Size(s).numel() for s in shapes)


def resnet50_momentum_case(step: str, dtype: torch.dtype
                           ) -> tuple[list[torch.nn.Parameter], str, str, int]:
    """ResNet-50's parameters with gradients for a momentum optimizer's step benchmark: the
    parameters, the results group ("<step> step, ResNet-50, <precision>"), the shape text and
    the floor's bytes. fp32: p, g, buf read, p, buf written (20 B). bf16: master, buf (4 B), g
    (2 B) read; master, buf (4 B), p (2 B) written (20 B)."""
    shapes = resnet50_shapes()
    n = numel(shapes)
    precision = "fp32" if dtype == torch.float32 else "bf16 + fp32 master"
    return (params_with_grads(shapes, dtype), f"{step} step, ResNet-50, {precision}",
            f"{n:,} params in {len(shapes)} tensors", n * 20)
