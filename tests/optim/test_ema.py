"""optim.ema.EMA against the reference's update, written out per tensor."""
import pytest
import torch

from mlperf_fast.optim.ema import EMA


def _model():
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))


def test_update_matches_the_reference_arithmetic():
    torch.manual_seed(0)
    model = _model()
    ema = EMA(model, 0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        model.train()
        model(torch.randn(8, 5))  # moves batch-norm's running statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = 0.9 * expected[k] + 0.1 * v
            else:
                expected[k] = v.clone()
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-6)


def test_state_round_trip_and_bad_decay():
    model = _model()
    ema = EMA(model, 0.5)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    ema.update()
    other = EMA(_model(), 0.5)
    other.load_state_dict(ema.state_dict())
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            EMA(model, bad)
