"""Joint (relu) + output projection + RNN-T loss, forward + backward, at the MLPerf RNN-T shape.

Baselines, on the same inputs in the same run: the torch broadcast joint with F.linear and
torchaudio's rnnt_loss (float32; for bfloat16 the logits are upcast for torchaudio, which has no
bfloat16 kernel), and apex's TransducerJoint + Linear + TransducerLoss where apex is installed.
Ours in float32 runs its GEMMs as 3xTF32 on tensor cores (each operand split into a TF32 part and
a remainder, stacked along K so that one cuBLAS TF32 GEMM sums the three products: float32
accuracy); more rows show the split in Triton kernels and plain cuBLAS float32 GEMMs. Floor: the three GEMMs (projection, its input gradient, its weight
gradient) at the measured bf16 matmul rate.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.ops import transducer_joint_loss

B, T, U, H, V = 32, 200, 81, 512, 1024
SHAPE = f"B={B}, T={T}, U={U}, H={H}, V={V}"
FLOPS = 3 * 2 * B * T * (U + 1) * H * V


def _inputs(dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    f = torch.randn(B, T, H, device="cuda", generator=gen).to(dtype).requires_grad_()
    g = torch.randn(B, U + 1, H, device="cuda", generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(V, H, device="cuda", generator=gen) / H**0.5).to(dtype).requires_grad_()
    b = torch.zeros(V, device="cuda").to(dtype).requires_grad_()
    targets = torch.randint(0, V - 1, (B, U), device="cuda", generator=gen, dtype=torch.int32)
    t_lens = torch.full((B,), T, device="cuda", dtype=torch.int32)
    u_lens = torch.full((B,), U, device="cuda", dtype=torch.int32)
    return (f, g, w, b), (targets, t_lens, u_lens)


def _step(loss_fn, params):
    def run():
        for p in params:
            p.grad = None
        loss_fn().backward()
    return run


def _torch_joint(params, labels, upcast):
    import torchaudio.functional as TAF

    f, g, w, b = params

    def loss():
        logits = F.linear(F.relu(f[:, :, None] + g[:, None]), w, b)
        return TAF.rnnt_loss(logits.float() if upcast else logits, *labels)
    return loss


def _apex_joint(params, labels):
    from apex.contrib.transducer import TransducerJoint, TransducerLoss

    f, g, w, b = params
    targets, t_lens, u_lens = labels
    try:
        joint = TransducerJoint(pack_output=False, relu=True)
        relu_inside = True
    except TypeError:  # older apex: no activation in the joint
        joint, relu_inside = TransducerJoint(pack_output=False), False
    loss_mod = TransducerLoss(fuse_softmax_backward=True, packed_input=False)
    g_len = u_lens + 1

    def loss():
        h = joint(f, g, t_lens, g_len)
        if not relu_inside:
            h = F.relu(h)
        logits = F.linear(h, w, b)
        return loss_mod(logits, targets, t_lens, u_lens, V - 1).mean()
    return loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_joint_loss_mlperf_shape(measure, dtype):
    params, labels = _inputs(dtype)
    name = str(dtype).removeprefix("torch.")
    group = f"joint + projection + rnnt_loss fwd+bwd, {name}"
    try:
        import torchaudio  # noqa: F401
        has_torchaudio = True
    except ImportError:
        has_torchaudio = False
    if has_torchaudio:
        measure(group, "torch joint + torchaudio rnnt_loss",
                _step(_torch_joint(params, labels, dtype != torch.float32), params),
                role="baseline", shape=SHAPE, flops=FLOPS)
    try:
        import apex.contrib.transducer  # noqa: F401
        has_apex = True
    except ImportError:
        has_apex = False
    if has_apex:
        measure(group, "apex TransducerJoint + TransducerLoss", _step(_apex_joint(params, labels), params),
                role="baseline", shape=SHAPE, flops=FLOPS)
    measure(group, "mlperf_fast transducer_joint_loss",
            _step(lambda: transducer_joint_loss(*params, *labels), params), shape=SHAPE, flops=FLOPS)
    if dtype == torch.float32:
        for how, label in (("tf32x3_triton", "Triton 3xTF32 GEMMs"), ("cublas", "cuBLAS fp32 GEMMs")):
            measure(group, f"mlperf_fast transducer_joint_loss, {label}",
                    _step(lambda how=how: transducer_joint_loss(*params, *labels, fp32_gemm=how),
                          params), shape=SHAPE, flops=FLOPS)
