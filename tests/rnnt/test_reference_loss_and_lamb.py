"""The plain-PyTorch transducer loss against a direct (t, u) recursion in float64, and the LAMB
optimizer against apex FusedLAMB's formulas written out."""
from __future__ import annotations

import math

import pytest
import torch

from mlperf_fast.workloads.rnnt.reference import ReferenceLAMB
from mlperf_fast.workloads.rnnt.reference import transducer_loss


def brute_force_rnnt(logits: torch.Tensor, targets: torch.Tensor, t_lens, u_lens, blank: int):
    """-log P(y|x) per utterance, one lattice cell at a time (float64)."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    out = []
    for b in range(logits.shape[0]):
        T, U = int(t_lens[b]), int(u_lens[b])
        alpha = [[None] * (U + 1) for _ in range(T)]
        for t in range(T):
            for u in range(U + 1):
                terms = []
                if t == 0 and u == 0:
                    terms.append(lp.new_zeros(()))
                if t > 0:
                    terms.append(alpha[t - 1][u] + lp[b, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t][u - 1] + lp[b, t, u - 1, int(targets[b, u - 1])])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), 0)
        out.append(-(alpha[T - 1][U] + lp[b, T - 1, U, blank]))
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(1, 1, 0, 2), (2, 5, 3, 6), (3, 7, 4, 5), (4, 3, 6, 9)])
@pytest.mark.parametrize("blank", [0, -1])
def test_rnnt_loss_matches_direct_recursion(shape, blank, rng_seed):
    g = torch.Generator().manual_seed(rng_seed)
    b, t, u, v = shape
    logits = torch.randn((b, t, u + 1, v), generator=g, dtype=torch.float32) * 3
    # labels never equal the blank
    low, high = (1, v) if blank == 0 else (0, v - 1)
    targets = torch.randint(low, high, (b, u), generator=g, dtype=torch.int32)
    t_lens = torch.randint(1, t + 1, (b,), generator=g, dtype=torch.int32)
    t_lens[0] = t
    u_lens = torch.randint(0, u + 1, (b,), generator=g, dtype=torch.int32)
    u_lens[-1] = u
    x = logits.clone().requires_grad_(True)
    ours = transducer_loss(x, targets, t_lens, u_lens, blank=blank, reduction="none")
    ours.sum().backward()
    y = logits.double().clone().requires_grad_(True)
    want = brute_force_rnnt(y, targets, t_lens, u_lens, blank % v)
    want.sum().backward()
    # float32 log-softmax and logaddexp chains of length T+U: a few ulps of the ~10-30 totals
    torch.testing.assert_close(ours.double(), want.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-4, atol=1e-5)
    # cells outside an utterance's lattice get no gradient
    for i in range(b):
        assert float(x.grad[i, int(t_lens[i]):].abs().sum()) == 0.0
        assert float(x.grad[i, :, int(u_lens[i]) + 1:].abs().sum()) == 0.0


def test_rnnt_loss_reductions_and_checks():
    logits = torch.randn(2, 4, 3, 5)
    targets = torch.ones(2, 2, dtype=torch.int32)
    tl = torch.tensor([4, 3], dtype=torch.int32)
    ul = torch.tensor([2, 1], dtype=torch.int32)
    none = transducer_loss(logits, targets, tl, ul, blank=0, reduction="none")
    assert torch.allclose(transducer_loss(logits, targets, tl, ul, blank=0), none.mean())
    assert torch.allclose(transducer_loss(logits, targets, tl, ul, blank=0, reduction="sum"),
                          none.sum())
    with pytest.raises(TypeError, match="int32"):
        transducer_loss(logits, targets.long(), tl, ul, blank=0)
    with pytest.raises(ValueError, match="targets"):
        transducer_loss(logits, targets[:, :1], tl, ul, blank=0)
    with pytest.raises(ValueError, match="logit_lengths"):
        transducer_loss(logits, targets, tl + 1, ul, blank=0)
    with pytest.raises(ValueError, match="blank"):
        transducer_loss(logits, targets, tl, ul, blank=5)
    with pytest.raises(ValueError, match="reduction"):
        transducer_loss(logits, targets, tl, ul, blank=0, reduction="avg")


def test_rnnt_loss_single_path_is_exact():
    # T=1, U=0: the only path is one blank
    logits = torch.tensor([[[[0.5, 1.0, -2.0]]]])
    loss = transducer_loss(logits, torch.zeros(1, 0, dtype=torch.int32),
                           torch.tensor([1], dtype=torch.int32),
                           torch.tensor([0], dtype=torch.int32), blank=2)
    assert math.isclose(float(loss), float(-torch.log_softmax(logits[0, 0, 0], 0)[2]), rel_tol=1e-6)


def _lamb_reference(params, grads, steps, lr, betas, eps, wd, max_norm):
    """apex FusedLAMB (adam_w_mode, bias correction, grad averaging) in float64, by hand."""
    params = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        gs = [g.double() for g in grads[step - 1]]
        norm = math.sqrt(sum(float((g * g).sum()) for g in gs))
        clip = norm / max_norm if norm > max_norm else 1.0
        for i, g in enumerate(gs):
            g = g / clip
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            mh, vh = m[i] / (1 - betas[0] ** step), v[i] / (1 - betas[1] ** step)
            upd = mh / (vh.sqrt() + eps) + wd * params[i]
            pn, un = float(params[i].norm()), float(upd.norm())
            ratio = pn / un if pn > 0 and un > 0 else 1.0
            params[i] = params[i] - lr * ratio * upd
    return params


@pytest.mark.parametrize("wd", [1e-3, 0.1])
def test_lamb_matches_formulas(wd, rng_seed):
    g = torch.Generator().manual_seed(rng_seed)
    shapes = [(7, 3), (5,), (1,), (4, 4, 2)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params[2].zero_()  # a zero tensor: trust ratio 1
    grads = [[torch.randn(s, generator=g) * (5 if k == 0 else 0.1) for s in shapes]
             for k in range(3)]
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = ReferenceLAMB([{"params": ps[:2]}, {"params": ps[2:]}], lr=4e-3, betas=(0.9, 0.999), eps=1e-9,
               weight_decay=wd, max_grad_norm=1.0)
    for k in range(3):
        for p, gr in zip(ps, grads[k]):
            p.grad = gr.clone()
        opt.step()
    want = _lamb_reference(params, grads, 3, 4e-3, (0.9, 0.999), 1e-9, wd, 1.0)
    for p, w in zip(ps, want):
        # float32 state against float64: relative error of a few ulps of the update
        torch.testing.assert_close(p.detach().double(), w, rtol=1e-5, atol=1e-6)
