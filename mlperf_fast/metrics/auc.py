"""Area under the ROC curve, as ``sklearn.metrics.roc_auc_score`` computes it for binary labels,
in one sort on the scores' device (the 89M test samples of Criteo 1TB on the GPU).

sklearn builds the ROC curve with one point per distinct score (tied scores move true and false
positives together) and integrates it with the trapezoidal rule; that equals the Mann-Whitney
statistic with ties counted one half. Here: sort descending, cumulative true and false positive
counts at the last element of each run of equal scores, trapezoids between consecutive runs.
Counts are exact integers (int64); the area is accumulated in float64.
"""
from __future__ import annotations

import torch


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The ROC AUC of ``scores`` (1-D, any real dtype; higher means positive) against ``labels``
    (1-D, the same length; 0/1 of any dtype, bool included).

    Raises ValueError, as sklearn does, when only one class is present, and on NaN scores,
    labels other than 0 and 1, or mismatched shapes.
    """
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("scores and labels must be tensors")
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"scores must be real numbers, got {scores.dtype}")
    labels = labels.to(scores.device)
    y = labels.to(torch.int64) if labels.dtype == torch.bool else labels
    nan = torch.isnan(scores).any() if scores.is_floating_point() else \
        torch.zeros((), dtype=torch.bool, device=scores.device)
    # one read back to the host for every check and the class counts
    labels_ok, has_nan, n_pos = torch.stack([((y == 0) | (y == 1)).all().to(torch.int64),
                                             nan.to(torch.int64), (y == 1).sum()]).tolist()
    if not labels_ok:
        raise ValueError("labels must be 0 or 1")
    if has_nan:
        raise ValueError("scores contain NaN")
    n = scores.numel()
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("only one class present in labels: the ROC AUC is not defined")
    s = scores if scores.is_floating_point() else scores.to(torch.float64)
    order = torch.argsort(s, descending=True, stable=True)
    s_sorted = s[order]
    y_sorted = (y[order] == 1).to(torch.int64)
    tps = torch.cumsum(y_sorted, 0)
    fps = torch.arange(1, n + 1, device=s.device, dtype=torch.int64) - tps
    # the last position of each run of equal scores (a ROC point)
    last = torch.ones(n, dtype=torch.bool, device=s.device)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    tp = torch.cat([tps.new_zeros(1), tps[last]]).to(torch.float64)
    fp = torch.cat([fps.new_zeros(1), fps[last]]).to(torch.float64)
    area = ((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1])).sum() * 0.5
    return float(area / (float(n_pos) * float(n_neg)))
