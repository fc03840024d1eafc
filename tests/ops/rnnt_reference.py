"""Float64 oracles for the transducer tests: plain loops over the lattice, gradients by autograd,
so that neither the recursion order nor the analytic gradient of the kernels is shared."""
from __future__ import annotations

import torch


def rnnt_costs_reference(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                         target_lengths: torch.Tensor, blank: int = -1,
                         fused_log_softmax: bool = True) -> torch.Tensor:
    """Per-utterance negative log-likelihood (B,), float64, differentiable in ``logits``."""
    lp = logits.double()
    if fused_log_softmax:
        lp = lp.log_softmax(-1)
    blank = blank % logits.shape[-1]
    costs = []
    for b in range(logits.shape[0]):
        t_len, u_len = int(logit_lengths[b]), int(target_lengths[b])
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(t_len):
            for u in range(u_len + 1):
                if t == 0 and u == 0:
                    alpha[t, u] = lp.new_zeros(())
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1, u] + lp[b, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t, u - 1] + lp[b, t, u - 1, int(targets[b, u - 1])])
                alpha[t, u] = torch.logsumexp(torch.stack(terms), 0)
        costs.append(-(alpha[t_len - 1, u_len] + lp[b, t_len - 1, u_len, blank]))
    return torch.stack(costs) if costs else lp.new_zeros(0)


def rnnt_grad_reference(logits, targets, logit_lengths, target_lengths, blank=-1,
                        fused_log_softmax=True, clamp=-1.0, weights=None):
    """(costs, d(sum_b weights[b] * clamp(grad of cost_b))/d logits) in float64, clamping each
    utterance's gradient before the weighting as torchaudio does."""
    x = logits.detach().double().requires_grad_()
    costs = rnnt_costs_reference(x, targets, logit_lengths, target_lengths, blank,
                                 fused_log_softmax)
    weights = torch.ones(len(costs), dtype=torch.float64) if weights is None else weights.double()
    grad = torch.zeros_like(x)
    for b in range(len(costs)):
        (g,) = torch.autograd.grad(costs[b], x, retain_graph=True)
        if clamp > 0:
            g = g.clamp(-clamp, clamp)
        grad += weights[b].item() * g
    return costs.detach(), grad
