"""roc_auc against sklearn.metrics.roc_auc_score (the oracle): random scores, heavy ties,
integer and low-precision scores, one element of a class, and the errors sklearn raises."""
import numpy as np
import pytest
import torch

from mlperf_fast.metrics.auc import roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    want = sklearn_metrics.roc_auc_score(labels.numpy(), scores.double().numpy())
    assert roc_auc(scores, labels) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 17, 1000, 100_003])
def test_random_scores(n):
    g = torch.Generator().manual_seed(n)
    labels = (torch.rand(n, generator=g) < 0.3).long()
    labels[0], labels[1] = 0, 1
    _check(torch.rand(n, generator=g, dtype=torch.float64), labels)


@pytest.mark.parametrize("levels", [1, 2, 5, 50])
def test_ties(levels):
    g = torch.Generator().manual_seed(levels)
    n = 5000
    scores = torch.randint(0, levels, (n,), generator=g).float() / levels
    labels = (torch.rand(n, generator=g) < (0.2 + 0.5 * scores)).long()
    labels[:2] = torch.tensor([0, 1])
    _check(scores, labels)


def test_dtypes_and_label_kinds():
    g = torch.Generator().manual_seed(0)
    n = 4000
    scores = torch.randn(n, generator=g)
    labels = torch.rand(n, generator=g) < torch.sigmoid(scores)
    for s in (scores, scores.half(), scores.bfloat16(), (scores * 10).long()):
        for y in (labels, labels.float(), labels.int()):
            want = sklearn_metrics.roc_auc_score(y.long().numpy(), s.double().numpy())
            assert roc_auc(s, y) == pytest.approx(want, abs=1e-12)


def test_single_positive_and_perfect_orders():
    _check(torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0, 1, 0]))
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0
    assert roc_auc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 1, 0])) == 0.0
    assert roc_auc(torch.tensor([1.0, 1.0]), torch.tensor([1, 0])) == 0.5


def test_non_contiguous():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(2000, 2, generator=g)[:, 1]
    labels = (torch.rand(2000, 2, generator=g) < 0.5).long()[:, 0]
    assert not scores.is_contiguous()
    _check(scores, labels)


def test_errors():
    with pytest.raises(ValueError, match="one class"):
        roc_auc(torch.rand(5), torch.ones(5))
    with pytest.raises(ValueError, match="one class"):
        roc_auc(torch.rand(0), torch.zeros(0))
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        roc_auc(torch.rand(3), torch.zeros(4))
    with pytest.raises(TypeError):
        roc_auc(np.zeros(3), torch.zeros(3))


@pytest.mark.cuda
def test_cuda_matches_sklearn():
    g = torch.Generator(device="cuda").manual_seed(0)
    n = 3_000_000
    scores = (torch.rand(n, generator=g, device="cuda") * 1000).round() / 1000  # many ties
    labels = (torch.rand(n, generator=g, device="cuda") < 0.1 + 0.5 * scores).to(torch.int8)
    want = sklearn_metrics.roc_auc_score(labels.cpu().numpy(), scores.cpu().numpy())
    assert roc_auc(scores, labels) == pytest.approx(want, abs=1e-12)
