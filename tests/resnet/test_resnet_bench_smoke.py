"""bench_resnet_step.py's and bench_resnet_input.py's code on the CPU at tiny sizes (their
timing runs only on a GPU machine)."""
from bench_modules import load_step_bench as _bench


def test_step_smoke_runs_both_steps():
    _bench("bench_resnet_step").smoke()


def test_input_bench_data_and_epochs(tmp_path):
    bench = _bench("bench_resnet_input")
    from mlperf_fast.workloads.resnet.data import open_split

    bench.N, bench.REPEAT = 8, 2
    images = open_split(bench.imagenet_like(str(tmp_path)), "train", log=lambda m: None)
    assert len(images) == 16  # each file listed twice (hard links)
    bench.BATCH = 4
    for workers in (0, 2):
        run = bench.epochs(images, workers)
        assert run() == run() == 16  # whole epochs, the second through the kept workers
    assert 0 in bench.worker_counts()
