"""bench_bert_step.py's code on the CPU at a tiny size (its timing runs only on a GPU)."""
import torch
from bench_modules import load_step_bench


def _bench():
    return load_step_bench("bench_bert_step")


def test_smoke_runs_every_step():
    _bench().smoke()


def test_lengths_follow_the_writer():
    lens = _bench().lengths(20000, torch.Generator().manual_seed(0))
    assert int(lens.min()) >= 8 and int(lens.max()) == 512
    assert 380 < float(lens.float().mean()) < 440
