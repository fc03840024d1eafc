"""FusedLAMB against its pure-PyTorch implementation in float64, on every backend; GradScaler,
state_dict, argument errors and CUDA graph capture."""
from __future__ import annotations

import pytest
import torch
from optim_cases import (
    DTYPE_IDS,
    DTYPES,
    budget,
    cuda_matches_cpu,
    groups,
    parity,
    tolerance,
)

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.optim import FusedLAMB


def lamb(**kw):
    def make(params, backend):
        decay = {"weight_decay": kw.pop("weight_decay", 0.01)} if "weight_decay" in kw else {
            "weight_decay": 0.01}
        return FusedLAMB(groups(params, **decay), lr=1e-2, backend=backend, **kw)
    return make


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parity_model_like(backend, dtype, rng_seed):
    steps, count = budget(backend)
    rtol, atol = tolerance(backend, dtype)
    # max_grad_norm 1 with gradients of norm ~100: clipping is active on every step.
    parity(lamb(), backend, dtype, rng_seed, steps=steps, count=count, rtol=rtol, atol=atol)


@pytest.mark.parametrize("options", [
    dict(use_nvlamb=True), dict(adam_w_mode=False), dict(grad_averaging=False),
    dict(bias_correction=False), dict(max_grad_norm=0.0), dict(max_grad_norm=None),
    dict(betas=(0.8, 0.99), eps=1e-8)], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options(backend, options, rng_seed):
    steps, count = budget(backend)
    rtol, atol = tolerance(backend, torch.float32)
    parity(lamb(**options), backend, torch.float32, rng_seed, steps=min(steps, 10), count=count,
           rtol=rtol, atol=atol)


def test_trust_ratio_only_where_decayed():
    # apex semantics: groups without weight decay take the plain Adam step (ratio 1) unless
    # use_nvlamb; where ||p|| = 0 the ratio is 1 too.
    for nvlamb in (False, True):
        p = torch.nn.Parameter(torch.full((4,), 3.0))
        z = torch.nn.Parameter(torch.zeros(4))
        opt = FusedLAMB([dict(params=[p, z], weight_decay=0.0)], lr=0.1, max_grad_norm=0,
                        use_nvlamb=nvlamb, bias_correction=False, eps=0.0, backend="native")
        p.grad = torch.full((4,), 0.5)
        z.grad = torch.full((4,), 0.5)
        opt.step()
        # Adam's first step without bias correction: update = (0.1 g) / sqrt(0.001 g^2).
        u = 0.1 / 0.001 ** 0.5
        ratio = 3.0 / u if nvlamb else 1.0
        torch.testing.assert_close(p.detach(), torch.full((4,), 3.0 - 0.1 * ratio * u))
        torch.testing.assert_close(z.detach(), torch.full((4,), -0.1 * u))


def test_grad_scaler_unscales_and_skips(backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    w0 = torch.randn(300, 20, generator=gen)
    x = torch.randn(64, 300, generator=gen)
    params = [torch.nn.Parameter(w0.clone().to(d))]
    plain = [torch.nn.Parameter(w0.clone().to(d))]
    opt = FusedLAMB(params, lr=1e-2, backend=backend.name)
    ref = FusedLAMB(plain, lr=1e-2, backend=backend.name)
    scaler = torch.amp.GradScaler(d.type, init_scale=1024.0)
    for _ in range(3):
        opt.zero_grad()
        ref.zero_grad()
        scaler.scale((x.to(d) @ params[0]).square().mean()).backward()
        scaler.step(opt)
        scaler.update()
        (x.to(d) @ plain[0]).square().mean().backward()
        ref.step()
    torch.testing.assert_close(params[0].detach(), plain[0].detach(), rtol=1e-5, atol=1e-6)
    before = params[0].detach().clone()
    step = opt.state[params[0]]["step"].clone()
    opt.zero_grad()
    scaler.scale((x.to(d) @ params[0]).square().mean() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(params[0].detach(), before)
    assert torch.equal(opt.state[params[0]]["step"], step)
    assert scaler.get_scale() == 512.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_state_dict_round_trip(backend, dtype, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    base = [torch.randn(n, generator=gen) for n in (10, 9000, 1)]
    params = [torch.nn.Parameter(b.to(d, dtype)) for b in base]
    opt = FusedLAMB(params, lr=1e-2, backend=backend.name)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(d, dtype)
        opt.step()
    saved = opt.state_dict()
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = FusedLAMB(clones, lr=1e-2, backend="torch")
    other.load_state_dict(saved)
    for p, c in zip(params, clones):
        for key in ("exp_avg", "exp_avg_sq"):
            assert other.state[c][key].dtype == torch.float32
            assert torch.equal(other.state[c][key], opt.state[p][key])
        if dtype == torch.bfloat16:
            assert torch.equal(other.state[c]["master_param"], opt.state[p]["master_param"])
    for p, c in zip(params, clones):
        p.grad = torch.randn(p.shape, generator=gen).to(d, dtype)
        c.grad = p.grad.clone()
    opt.step()
    other.step()
    for p, c in zip(params, clones):
        # bf16: the master weights (the bf16 params are their rounding, by each backend's cast).
        ours = opt.state[p].get("master_param", p.detach())
        theirs = other.state[c].get("master_param", c.detach())
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    p = torch.nn.Parameter(torch.randn(5))
    with pytest.raises(ValueError, match="AMSGrad"):
        FusedLAMB([p], amsgrad=True)
    with pytest.raises(ValueError, match="backend"):
        FusedLAMB([p], backend="cuDNN")
    opt = FusedLAMB([p])
    p.grad = torch.randn(5).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    q = torch.nn.Parameter(torch.arange(5), requires_grad=False)
    q.grad = torch.arange(5)
    with pytest.raises(TypeError, match="int64"):
        FusedLAMB([q]).step()


@pytest.mark.cuda
def test_mixed_devices_rejected():
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(torch.randn(5, device="cuda"))
    a.grad, b.grad = torch.randn(5), torch.randn(5, device="cuda")
    with pytest.raises(ValueError, match="device"):
        FusedLAMB([a, b]).step()


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["native", "triton"])
def test_cuda_graph_capture_whole_step(name, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    shapes = [(1024, 1024), (1024,), (4096, 300), (3,)]
    base = [torch.randn(s, generator=gen) for s in shapes]
    params = [torch.nn.Parameter(b.cuda()) for b in base]
    eager = [torch.nn.Parameter(b.cuda()) for b in base]
    lr = torch.tensor(1e-2, device="cuda")
    opt = FusedLAMB(params, lr=lr, capturable=True, backend=name)
    ref = FusedLAMB(eager, lr=1e-2, backend=name)
    grads = [torch.randn(s, generator=gen).cuda() for s in shapes]
    for p, e, g in zip(params, eager, grads):
        p.grad, e.grad = g.clone(), g.clone()
    replay = capture(opt.step)  # one warm-up step first: state, compiled kernels, chunk tables
    ref.step()
    for _ in range(3):
        replay()
        ref.step()
    lr.fill_(1e-3)
    for g in ref.param_groups:
        g["lr"] = 1e-3
    replay()
    ref.step()
    torch.cuda.synchronize()
    for p, e in zip(params, eager):
        torch.testing.assert_close(p.detach(), e.detach(), rtol=1e-6, atol=1e-7)
    assert float(opt.state[params[0]]["step"]) == 5


def test_torch_compile_fake():
    if not torch.ops.mlperf_fast.lamb_step.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        p = mode.from_tensor(torch.randn(5))
        s = mode.from_tensor(torch.ones(()))
        torch.ops.mlperf_fast.lamb_step([p], [p], [p], [p], [], [s], None, 1e-3, 0.9, 0.999,
                                        1e-6, 0.01, True, True, True, False, None, 1.0, None,
                                        None, 0)


@pytest.mark.cuda
def test_tensor_split_over_launches(rng_seed):
    # 32Ki-element chunks, 4096 a launch: the third tensor spans two launches of each pass, the
    # second pass handing its chunks out backwards.
    cuda_matches_cpu(lambda ps, be: FusedLAMB(ps, lr=1e-2, weight_decay=0.01, max_grad_norm=1.0,
                                              backend=be),
                     [7, 300, 32768 * 4096 + 1001, 65536], rng_seed)
