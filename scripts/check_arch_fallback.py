"""On a GPU, with mlperf_fast._C built for architectures that exclude it: every op's ``auto``
falls back to its Triton or PyTorch kernel with one warning in all, gives the torch backend's
results, and an explicit ``backend="native"`` is a clear ValueError (not a CUDA fault).

    TORCH_CUDA_ARCH_LIST=8.0 SKIP_TESTS=1 SKIP_BENCH=1 scripts/gpu_check.sh OUTDIR  # on an H100/H200
    python3 scripts/check_arch_fallback.py

Exit status 0 when all of it holds, 1 otherwise, 2 when the build does cover this GPU.
"""
from __future__ import annotations

import sys
import warnings

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    from mlperf_fast import ops
    from mlperf_fast.ops import _library
    from mlperf_fast.optim import FusedLAMB

    dev = torch.device("cuda")
    archs, ptx = _library.cuda_archs()
    cap = torch.cuda.get_device_capability()
    if not archs or _library.arch_supported(cap, archs, ptx):
        print(f"_C is built for {archs} (ptx {ptx}), which runs on sm_{cap[0]}{cap[1]}: rebuild "
              "with TORCH_CUDA_ARCH_LIST naming another architecture first", file=sys.stderr)
        return 2
    failures = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = {name: op.choose(dev) for name, op in _library.OPS.items()}
        g = torch.Generator(device="cuda").manual_seed(0)
        xy = torch.rand(500, 2, device=dev, generator=g) * 100
        boxes = torch.cat([xy, xy + torch.rand(500, 2, device=dev, generator=g) * 30 + 1], 1)
        scores = torch.rand(500, device=dev, generator=g)
        if not torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5,
                                                                backend="torch")):
            failures.append("nms auto differs from the torch backend")
        params = [torch.nn.Parameter(torch.randn(s, device=dev, generator=g))
                  for s in ((64, 32), (32,), (1000,))]
        twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, device=dev, generator=g)
            q.grad = p.grad.clone()
        FusedLAMB(params, lr=1e-2, weight_decay=0.01).step()
        FusedLAMB(twins, lr=1e-2, weight_decay=0.01, backend="torch").step()
        for p, q in zip(params, twins):
            if not torch.allclose(p, q, rtol=1e-5, atol=1e-6):
                failures.append("FusedLAMB auto differs from the torch backend")
                break
    natives = [n for n, b in chosen.items() if b == "native"]
    if natives:
        failures.append(f"auto chose native for {natives}")
    ours = [w for w in caught if "cannot run on this GPU" in str(w.message)]
    if len(ours) != 1:
        failures.append(f"{len(ours)} fallback warnings, one expected")
    try:
        ops.nms(boxes, scores, 0.5, backend="native")
        failures.append("backend='native' ran on a GPU its build excludes")
    except ValueError as e:
        print(f"backend='native' refused: {e}")
    print(f"_C archs {archs} (ptx {ptx}) on sm_{cap[0]}{cap[1]}; auto chose: "
          + ", ".join(f"{n}={b}" for n, b in sorted(chosen.items())))
    for f in failures:
        print("FAILED:", f)
    print("fallback: ok" if not failures else "fallback: FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
