"""bench_dlrm_step.py's code on the CPU at tiny sizes (its timing runs only on a GPU)."""
import pytest
import torch
import torch.distributed as dist
from bench_modules import load_step_bench

# Three float32 steps from the same weights agree to ~2e-7 here; with the tables' update left
# out, torchrec's second loss moves by 7e-4 (2e-3 relative), far outside this.
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}


def _bench():
    return load_step_bench("bench_dlrm_step")


def test_smoke_reference_and_ours_agree():
    losses = _bench().smoke()
    assert len(losses["reference"]) == 3
    torch.testing.assert_close(losses["mlperf_fast"], losses["reference"], **LOSS_TOL)


def test_smoke_torchrec_agrees():
    bench = _bench()
    missing = bench.torchrec_missing()
    if missing:
        pytest.skip(missing)
    losses = bench.smoke(with_torchrec=True)
    torch.testing.assert_close(losses["torchrec"], losses["reference"], **LOSS_TOL)
    torch.testing.assert_close(losses["torchrec"], losses["mlperf_fast"], **LOSS_TOL)
    assert not dist.is_initialized()  # its one-rank process group is gone with it


def test_power_law_ids_in_range_and_skewed():
    bench = _bench()
    g = torch.Generator().manual_seed(0)
    ids = bench.power_law_ids(1000, 20000, g, "cpu")
    assert ids.min() >= 0 and ids.max() < 1000
    counts = torch.bincount(ids, minlength=1000).sort(descending=True).values
    assert counts[:10].sum() > 0.3 * 20000  # the head of 1 / (k + 1) over 1000 rows: ~39%
    assert bench.power_law_ids(1, 5, g, "cpu").tolist() == [0] * 5
