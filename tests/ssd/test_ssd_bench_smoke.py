"""bench_ssd_step.py's code on the CPU at tiny sizes (its timing runs only on a GPU machine)."""
import pytest
from bench_modules import load_step_bench as _bench


@pytest.mark.slow
def test_step_smoke_runs_both_steps():
    _bench("bench_ssd_step").smoke()
