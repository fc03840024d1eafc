"""bench_retinanet_step.py's code on the CPU at a tiny size (its timing runs only on a GPU)."""
from bench_modules import load_step_bench as _bench


def test_step_smoke_runs_both_steps():
    _bench("bench_retinanet_step").smoke()
