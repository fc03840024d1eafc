"""multi_tensor_l2norm against a float64 reference, on every backend.

Tolerances: float32, float16 and bfloat16 inputs are accumulated in float32 (tree reductions in
the kernels, torch's own order in the torch path); over the few million squares here the observed
relative error stays below 2e-5, so 5e-5 is the bound, still far below what a dropped or doubled
chunk would change (>= 1e-3 of the norm here). float64 inputs are accumulated in float64: 1e-12.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm

F32_ACC = 5e-5
RTOL = {torch.float32: F32_ACC, torch.float64: 1e-12, torch.float16: F32_ACC, torch.bfloat16: F32_ACC}


def reference(tensors):
    norms = [t.detach().to("cpu", torch.float64).reshape(-1).pow(2).sum().sqrt() for t in tensors]
    norms = torch.stack(norms) if norms else torch.zeros(0, dtype=torch.float64)
    return norms.pow(2).sum().sqrt(), norms


def check(tensors, backend, rtol):
    total, norms = multi_tensor_l2norm(tensors, per_tensor=True, backend=backend.name)
    ref_total, ref_norms = reference(tensors)
    assert total.shape == () and norms.shape == (len(tensors),)
    assert total.device.type == backend.device.type
    torch.testing.assert_close(total.cpu().double(), ref_total, rtol=rtol, atol=1e-30)
    torch.testing.assert_close(norms.cpu().double(), ref_norms, rtol=rtol, atol=1e-30)
    no_per, empty = multi_tensor_l2norm(tensors, per_tensor=False, backend=backend.name)
    assert empty.numel() == 0
    assert torch.equal(no_per, total)


def model_like(gen, device, dtype):
    """Hundreds of tensors of mixed sizes, as a model's parameters are: matrices, vectors, odd
    sizes straddling the chunk size, and empty tensors."""
    sizes = [(1,), (3,), (1024,), (65535,), (65536,), (65537,), (0,), (33, 17), (512, 1000),
             (7, 0, 3), (131073,), (5, 5, 5, 5)]
    sizes = sizes * 3 + [(int(n),) for n in torch.randint(1, 5000, (60,), generator=gen)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype) for s in sizes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_model_like_parameter_set(backend, dtype, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(model_like(gen, backend.device, dtype), backend, RTOL[dtype])


def test_mixed_dtypes(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    tensors = [torch.randn(n, generator=gen).to(backend.device, dt)
               for n, dt in [(100, torch.float32), (70000, torch.bfloat16), (3, torch.float16),
                             (65536, torch.float32), (1, torch.float16)]]
    total, _ = multi_tensor_l2norm(tensors, True, backend=backend.name)
    assert total.dtype == torch.float32
    check(tensors, backend, F32_ACC)
    with_f64 = tensors + [torch.randn(5, dtype=torch.float64, generator=gen).to(backend.device)]
    total, _ = multi_tensor_l2norm(with_f64, True, backend=backend.name)
    assert total.dtype == torch.float64
    check(with_f64, backend, F32_ACC)


def test_one_element_and_zeros(backend):
    d = backend.device
    check([torch.tensor([-3.0], device=d)], backend, 0)
    check([torch.zeros(10, device=d), torch.zeros(0, device=d)], backend, 0)
    total, norms = multi_tensor_l2norm([torch.tensor([3.0, 4.0], device=d)], True,
                                       backend=backend.name)
    assert total.item() == 5.0 and norms.tolist() == [5.0]


def test_all_empty(backend):
    total, norms = multi_tensor_l2norm([torch.empty(0, device=backend.device)] * 3, True,
                                       backend=backend.name)
    assert total.item() == 0 and norms.tolist() == [0, 0, 0]


def test_empty_list():
    total, norms = multi_tensor_l2norm([], per_tensor=True)
    assert total.item() == 0 and norms.numel() == 0


def test_non_contiguous(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    base = torch.randn(300, 400, generator=gen).to(backend.device)
    tensors = [base.t(), base[::3, 1::2], base[:, 5], torch.randn(7, generator=gen).to(backend.device)]
    check(tensors, backend, F32_ACC)


def test_large_odd_size(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    tensors = [torch.randn(3_000_017, generator=gen).to(backend.device),
               torch.randn(65536 * 3 + 5, generator=gen).to(backend.device)]
    check(tensors, backend, F32_ACC)


def test_many_tensors_cross_launch_limits(backend):
    # More tensors than fit in one launch's argument table, and more chunks than one launch holds.
    d = backend.device
    tensors = [torch.full((n % 97 + 1,), 0.5, device=d) for n in range(700)]
    tensors += [torch.full((65536 * 40,), 0.25, device=d)] * 60
    check(tensors, backend, F32_ACC)


def test_huge_values_do_not_overflow_in_fp16_and_bf16(backend):
    # Squares of 60000 overflow float16; the accumulation is in float32.
    t = torch.full((1000,), 60000.0, device=backend.device, dtype=torch.float16)
    check([t], backend, F32_ACC)


def test_deterministic(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    tensors = model_like(gen, backend.device, torch.float32)
    first = multi_tensor_l2norm(tensors, True, backend=backend.name)
    for _ in range(3):
        again = multi_tensor_l2norm(tensors, True, backend=backend.name)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_bad_inputs():
    with pytest.raises(TypeError, match="tensors"):
        multi_tensor_l2norm(torch.ones(3))
    with pytest.raises(TypeError, match="tensors"):
        multi_tensor_l2norm([torch.ones(3), "x"])
    with pytest.raises(TypeError, match="float"):
        multi_tensor_l2norm([torch.ones(3, dtype=torch.int64)])
    with pytest.raises(ValueError, match="backend"):
        multi_tensor_l2norm([torch.ones(3)], backend="cuDNN")
    with pytest.raises(ValueError, match="dense"):
        multi_tensor_l2norm([torch.ones(3).to_sparse()])


@pytest.mark.cuda
def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="device"):
        multi_tensor_l2norm([torch.ones(3), torch.ones(3, device="cuda")])


@pytest.mark.cuda
def test_cuda_graph_capture():
    tensors = [torch.randn(n, device="cuda") for n in (10, 70000, 3)]
    multi_tensor_l2norm(tensors, True)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        total, norms = multi_tensor_l2norm(tensors, True)
    for t in tensors:
        t.mul_(2)
    graph.replay()
    torch.testing.assert_close(total.double().cpu(), reference(tensors)[0], rtol=1e-5, atol=0)


def test_torch_compile_fake():
    if not torch.ops.mlperf_fast.multi_tensor_l2norm.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    tensors = [torch.randn(5), torch.randn(70000)]
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in tensors]
        total, norms = torch.ops.mlperf_fast.multi_tensor_l2norm(fake, True)
        assert total.shape == () and norms.shape == (2,) and norms.dtype == torch.float32
