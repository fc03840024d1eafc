"""FusedLARS: LARS as the MLPerf ResNet-50 submissions use it, over multi-tensor kernels.

Per tensor: trust = trust_coefficient ||p|| / (||g|| + weight_decay ||p|| + eps) (1 where a norm
is 0), buf = momentum buf + lr trust (g + weight_decay p), p -= buf. Parameters of groups with
``lars_exclude=True`` (biases and batch-norm parameters, see :func:`lars_param_groups`) get
neither adaptation nor weight decay. A step is one multi-tensor L2 norm of the weights and the
gradients (each tensor read once), then one pass reading p, g, buf and writing p, buf.
"""
from __future__ import annotations

import torch

from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.ops.sgd import lars_step
from mlperf_fast.optim._base import FusedOptimizer, StepInputs, check_number, math_dtype


def lars_param_groups(model: torch.nn.Module, **group_options) -> list[dict]:
    """Two groups: weights (ndim > 1) adapted and decayed; biases and normalization parameters
    (ndim <= 1) excluded, as the MLPerf ResNet-50 reference does."""
    adapted, excluded = [], []
    for p in model.parameters():
        if p.requires_grad:
            (adapted if p.ndim > 1 else excluded).append(p)
    return [dict(params=adapted, **group_options),
            dict(params=excluded, lars_exclude=True, **group_options)]


class FusedLARS(FusedOptimizer):
    _zero_state = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 0.0, *,
                 capturable: bool = False, backend: str = "auto") -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, lars_exclude=False)
        super().__init__(params, defaults, backend=backend, capturable=capturable)

    def _check_options(self, group: dict, where: str) -> None:
        for key in ("momentum", "weight_decay", "eps"):
            check_number(group, key, where)
        check_number(group, "trust_coefficient", where, low_open=True)

    def _no_norms(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # The excluded tensors' norms are never used: zeros made once, not a fill per step.
        cache = self.__dict__.setdefault("_zero_norms", {})
        key = (n, dtype, device)
        if key not in cache:
            cache[key] = torch.zeros(2 * n, dtype=dtype, device=device)
        return cache[key]

    def _update(self, inputs: StepInputs) -> None:
        for group, lr_t, lr, buckets in inputs.groups:
            exclude = group["lars_exclude"]
            for b in buckets:
                n = len(b.params)
                weights = b.weights()
                if exclude:
                    norms = self._no_norms(n, math_dtype(weights[0].dtype), inputs.device)
                else:
                    norms = multi_tensor_l2norm(weights + b.grads, per_tensor=True,
                                                backend=self.backend)[1]
                lars_step(b.params, b.grads, b.state_list("momentum_buffer"), b.masters,
                          norms[:n], norms[n:], lr_t, lr, group["momentum"],
                          0.0 if exclude else group["weight_decay"], group["trust_coefficient"],
                          group["eps"], not exclude, inputs.grad_scale, inputs.found_inf,
                          backend=self.backend)
