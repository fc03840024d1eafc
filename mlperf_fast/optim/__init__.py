"""Fused optimizers: torch.optim.Optimizer subclasses over multi-tensor kernels, with apex's
interfaces (FusedLAMB, FusedAdam, FusedSGD) and the MLPerf ResNet-50 LARS."""
from mlperf_fast.optim.adam import FusedAdam, FusedAdamW
from mlperf_fast.optim.lamb import FusedLAMB
from mlperf_fast.optim.lars import FusedLARS, lars_param_groups
from mlperf_fast.optim.sgd import FusedSGD

__all__ = ["FusedAdam", "FusedAdamW", "FusedLAMB", "FusedLARS", "FusedSGD", "lars_param_groups"]
