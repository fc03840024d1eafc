"""A LAMB step (global gradient-norm clipping + LAMB) over BERT-large's parameter set.

Baselines, same run, same tensors: a per-tensor Python loop, a torch._foreach LAMB, torch's fused
AdamW (a fused optimizer of similar traffic, for scale) and apex's FusedLAMB when installed.
Floor: params, grads, m, v read once and params, m, v written once (plus, with bfloat16 params,
the float32 master weights: master, grads (2 bytes), m, v read; master, m, v, params written).
Ours also runs captured in a CUDA graph (capturable=True), the host's launches dropping out.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.optim import FusedLAMB
from shapes import bert_large_shapes, numel, params_with_grads

LR, BETAS, EPS, WD, MAX_NORM = 1e-3, (0.9, 0.999), 1e-6, 0.01, 1.0


def _param_groups(params):
    # BERT's groups: decay for matrices, none for biases and LayerNorm.
    return [dict(params=[p for p in params if p.dim() > 1], weight_decay=WD),
            dict(params=[p for p in params if p.dim() <= 1], weight_decay=0.0)]


class LoopLAMB:
    """LAMB one tensor at a time, in plain PyTorch (what a straightforward port runs)."""

    def __init__(self, params):
        self.params = params
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.decay = [WD if p.dim() > 1 else 0.0 for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = BETAS
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params]))
        clip = torch.clamp(norm / MAX_NORM, min=1.0)
        for p, m, v, wd in zip(self.params, self.m, self.v, self.decay):
            g = p.grad / clip
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            u = (m / (1 - b1**self.t)) / ((v / (1 - b2**self.t)).sqrt() + EPS) + wd * p
            if wd != 0:
                pn, un = p.norm(), u.norm()
                ratio = torch.where((pn > 0) & (un > 0), pn / un, 1.0)
                p.sub_(LR * ratio * u)
            else:
                p.sub_(LR * u)


class ForeachLAMB(LoopLAMB):
    """The same with torch._foreach ops (one kernel per op over all tensors)."""

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = BETAS
        grads = [p.grad for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        clip = torch.clamp(norm / MAX_NORM, min=1.0)
        g = torch._foreach_div(grads, clip)
        torch._foreach_lerp_(self.m, g, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, g, g, value=1 - b2)
        den = torch._foreach_div(self.v, 1 - b2**self.t)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, EPS)
        u = torch._foreach_div(self.m, 1 - b1**self.t)
        torch._foreach_div_(u, den)
        torch._foreach_add_(u, torch._foreach_mul(self.params, self.decay))
        pn = torch._foreach_norm(self.params)
        un = torch._foreach_norm(u)
        ratio = [torch.where((a > 0) & (b > 0) & (wd != 0), a / b, 1.0)
                 for a, b, wd in zip(pn, un, self.decay)]
        torch._foreach_mul_(u, ratio)
        torch._foreach_add_(self.params, u, alpha=-LR)


def _apex_lamb(params):
    if importlib.util.find_spec("apex") is None:
        return None
    try:
        from apex.optimizers import FusedLAMB as ApexLAMB
    except ImportError:
        return None
    return ApexLAMB(_param_groups(params), lr=LR, betas=BETAS, eps=EPS, max_grad_norm=MAX_NORM)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-master"])
def test_lamb_bert_large(measure, dtype):
    shapes = bert_large_shapes()
    n = numel(shapes)
    group = f"LAMB step, BERT-large, {'fp32' if dtype == torch.float32 else 'bf16 + fp32 master'}"
    shape = f"{n:,} params in {len(shapes)} tensors"
    # fp32: p, g, m, v read; p, m, v written. bf16: master, m, v (4 B) and g (2 B) read;
    # master, m, v (4 B) and p (2 B) written.
    floor_bytes = n * 28
    if dtype == torch.float32:
        params = params_with_grads(shapes, dtype)
        loop = LoopLAMB(params)
        measure(group, "per-tensor loop", loop.step, role="baseline", shape=shape,
                bytes=floor_bytes, warmup=1, repeat=5, min_time_s=0.1)
        foreach = ForeachLAMB(params)
        measure(group, "torch foreach LAMB", foreach.step, role="baseline", shape=shape,
                bytes=floor_bytes, warmup=2, repeat=10)
        adamw = torch.optim.AdamW(_param_groups(params), lr=LR, betas=BETAS, eps=EPS, fused=True)
        measure(group, "torch AdamW(fused=True), no clipping", adamw.step, role="baseline",
                shape=shape, bytes=floor_bytes)
        del loop, foreach, adamw
        apex = _apex_lamb(params)
        if apex is not None:
            measure(group, "apex FusedLAMB", apex.step, role="baseline", shape=shape,
                    bytes=floor_bytes)
            del apex
        del params
        torch.cuda.empty_cache()
    params = params_with_grads(shapes, dtype)
    for backend, batch in (("native", 0), ("native", 2 << 20), ("native", 8 << 20),
                           ("triton", 0)):
        opt = FusedLAMB(_param_groups(params), lr=LR, betas=BETAS, eps=EPS,
                        max_grad_norm=MAX_NORM, backend=backend, batch_elems=batch)
        impl = f"mlperf_fast {backend}" + (f", batches of {batch >> 20}Mi elements" if batch else "")
        measure(group, impl, opt.step, shape=shape, bytes=floor_bytes)
        del opt
        torch.cuda.empty_cache()
    for backend in ("native", "triton"):
        opt = FusedLAMB(_param_groups(params), lr=LR, betas=BETAS, eps=EPS,
                        max_grad_norm=MAX_NORM, backend=backend, capturable=True)
        measure(group, f"mlperf_fast {backend}, CUDA graph", capture(opt.step), shape=shape,
                bytes=floor_bytes)
        del opt
        torch.cuda.empty_cache()
