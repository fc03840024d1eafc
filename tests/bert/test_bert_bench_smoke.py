"""bench_bert_step.py's code on the CPU at a tiny size (its timing runs only on a GPU)."""
import importlib.util
import os

import torch


def _bench():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "steps",
                        "bench_bert_step.py")
    spec = importlib.util.spec_from_file_location("bench_bert_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_runs_every_step():
    _bench().smoke()


def test_lengths_follow_the_writer():
    lens = _bench().lengths(20000, torch.Generator().manual_seed(0))
    assert int(lens.min()) >= 8 and int(lens.max()) == 512
    assert 380 < float(lens.float().mean()) < 440
