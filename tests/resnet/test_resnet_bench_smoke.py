"""bench_resnet_step.py's and bench_resnet_input.py's code on the CPU at tiny sizes (their
timing runs only on a GPU machine)."""
import importlib.util
import os


def _bench(name):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "steps", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
