"""bench_dlrm_step.py's code on the CPU at tiny sizes (its timing runs only on a GPU)."""
import torch
from bench_modules import load_step_bench


def _bench():
    return load_step_bench("bench_dlrm_step")


def test_smoke_runs_both_steps():
    _bench().smoke()


def test_power_law_ids_in_range_and_skewed():
    bench = _bench()
    g = torch.Generator().manual_seed(0)
    ids = bench.power_law_ids(1000, 20000, g, "cpu")
    assert ids.min() >= 0 and ids.max() < 1000
    counts = torch.bincount(ids, minlength=1000).sort(descending=True).values
    assert counts[:10].sum() > 0.3 * 20000  # the head of 1 / (k + 1) over 1000 rows: ~39%
    assert bench.power_law_ids(1, 5, g, "cpu").tolist() == [0] * 5
