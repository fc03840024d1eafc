"""bench_resnet_step.py's and bench_resnet_input.py's code on the CPU at tiny sizes (their
timing runs only on a GPU machine)."""
from bench_modules import load_step_bench as _bench


def test_step_smoke_runs_both_steps():
    _bench("bench_resnet_step").smoke()


def test_input_bench_data_and_batches(tmp_path):
    bench = _bench("bench_resnet_input")
    from mlperf_fast.workloads.resnet.data import open_split

    bench.N = 8
    images = open_split(bench.imagenet_like(str(tmp_path)), "train", log=lambda m: None)
    assert len(images) == 8
    bench.BATCH = 4
    x, y = next(bench.endless(images, 0))
    assert x.shape == (4, 3, 224, 224) and y.shape == (4,)
    assert 0 in bench.worker_counts()
