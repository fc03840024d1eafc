"""bench_dlrm_step.py's code on the CPU at tiny sizes (its timing runs only on a GPU)."""
import importlib.util
import os

import torch

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "steps",
                     "bench_dlrm_step.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dlrm_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
