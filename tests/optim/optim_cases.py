"""Shared by the optimizer tests: a parameter set shaped like a real model's, and a 50-step
parity run of a fused optimizer against its pure-PyTorch implementation in float64 on the CPU."""
from __future__ import annotations

import torch

# Tensors straddling the kernels' chunk size (8192) and vector width, empty ones, and the shapes
# of layers: hundreds of tensors of mixed sizes.
BASE_SHAPES = [(0,), (1,), (3,), (8191,), (8192,), (8193,), (33, 17), (64, 130), (7, 0, 3),
               (20000,), (5, 5, 5, 5), (2,)]


def model_like_shapes(gen: torch.Generator, count: int = 160) -> list[tuple[int, ...]]:
    shapes = BASE_SHAPES * 3
    sizes = torch.randint(1, 1500, (count - len(shapes),), generator=gen).tolist()
    for k, n in enumerate(sizes):
        shapes.append((n,) if k % 3 else (n // 16 + 1, 16))
    return shapes


def make_params(shapes, gen, dtype, device):
    base = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    params = [torch.nn.Parameter(b.to(device, dtype)) for b in base]
    # The reference starts from exactly the values the fused optimizer starts from.
    ref = [torch.nn.Parameter(p.detach().to("cpu", torch.float64)) for p in params]
    return params, ref


def groups(params, **decay):
    """Weight decay for matrices, none for vectors (biases, LayerNorm), as BERT's LAMB does."""
    mats = [p for p in params if p.dim() > 1]
    vecs = [p for p in params if p.dim() <= 1]
    return [dict(params=mats, **decay), dict(params=vecs, weight_decay=0.0)]


def set_grads(params, ref, gen, step, scale=1.0):
    """Fresh gradients: every 7th tensor has none, every 5th is zero (from step 3 on)."""
    for i, (p, r) in enumerate(zip(params, ref)):
        if i % 7 == 3:
            p.grad, r.grad = None, None
            continue
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * (1 + i % 4)
        if i % 5 == 1 and step >= 3:
            g.zero_()
        g = (g * scale).to(p.device, p.dtype)
        p.grad = g
        r.grad = g.detach().to("cpu", torch.float64) / scale


def weights_of(opt, params):
    """The float32/float64 weights the optimizer updates: master copies for low precision."""
    out = []
    for p in params:
        st = opt.state.get(p, {})
        out.append(st["master_param"] if "master_param" in st else p.detach())
    return out


def parity(make_opt, backend, dtype, rng_seed, steps=50, rtol=1e-4, atol=1e-5, count=160):
    gen = torch.Generator().manual_seed(rng_seed)
    shapes = model_like_shapes(gen, count)
    params, ref = make_params(shapes, gen, dtype, backend.device)
    opt = make_opt(params, backend.name)
    ref_opt = make_opt(ref, "torch")
    for step in range(steps):
        set_grads(params, ref, gen, step)
        opt.step()
        ref_opt.step()
    for i, (w, r) in enumerate(zip(weights_of(opt, params), ref)):
        torch.testing.assert_close(w.cpu().double(), r.detach(), rtol=rtol, atol=atol,
                                   msg=lambda m: f"tensor {i} {tuple(r.shape)}: {m}")
    if dtype in (torch.float16, torch.bfloat16):
        for p in params:
            if p in opt.state and "master_param" in opt.state[p]:
                # The params are the master weights rounded (one ulp apart where the
                # interpreter's conversion truncates instead of rounding to nearest).
                torch.testing.assert_close(p.detach(), opt.state[p]["master_param"].to(dtype),
                                           rtol=1e-2, atol=0)
    return opt, ref_opt, params, ref


DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
DTYPE_IDS = ["fp32", "bf16", "fp16", "fp64"]


def budget(backend):
    """(steps, tensors) of a parity run: 50 steps over 160 tensors, except in Triton's
    interpreter, which runs each program in Python (seconds per launch): 2 steps over 40."""
    if backend.name == "triton" and backend.device.type == "cpu":
        return 2, 40
    return 50, 160


def tolerance(backend, dtype):
    """float32 math (float32 params, and float16 / bfloat16 through float32 master weights):
    after 50 steps of updates of size ~lr on weights of size ~1, the float32 roundings of each
    step (~6e-8 relative) accumulate to ~2e-6 absolute at most in practice; 1e-5 / 1e-4 leaves
    margin and is still far below a wrong term (an update is ~1e-2). float64: the kernels round
    differently from the reference at 1e-16. Triton takes host floats as float32, so its float64
    path is not float64-exact: its hyperparameters carry 1e-7 relative error, and after 50 LARS
    steps on the H100 its weights differed by up to 4.4e-5 relative (2.2e-6 absolute), so it is
    held to the float32 tolerance."""
    if dtype == torch.float64:
        return (1e-4, 1e-5) if backend.name == "triton" else (1e-10, 1e-10)
    return 1e-4, 1e-5


def cuda_matches_cpu(make_opt, sizes: list[int], rng_seed: int, steps: int = 2) -> None:
    """The native CUDA step against the native CPU step on the same 1-D tensors: for sizes that
    cross a launch's limits (more chunks than one launch holds), where the CUDA passes split a
    tensor over launches and walk some of them backwards. float32 on both sides; the per-tensor
    norms are summed in another order, so the weights agree to float32 rounding (rtol 1e-5)."""
    gen = torch.Generator().manual_seed(rng_seed)
    base = [torch.randn(n, generator=gen) for n in sizes]
    on_cpu = [torch.nn.Parameter(b.clone()) for b in base]
    on_gpu = [torch.nn.Parameter(b.cuda()) for b in base]
    opt_cpu, opt_gpu = make_opt(on_cpu, "native"), make_opt(on_gpu, "native")
    for _ in range(steps):
        for c, g in zip(on_cpu, on_gpu):
            c.grad = torch.randn(c.shape, generator=gen)
            g.grad = c.grad.cuda()
        opt_cpu.step()
        opt_gpu.step()
    for c, g in zip(on_cpu, on_gpu):
        torch.testing.assert_close(g.detach().cpu(), c.detach(), rtol=1e-5, atol=1e-6)
