"""The peer-suite harness (peers/): its failure classes, the CPU device map, and a whole run of
the one suite that needs no checkout (torch's nn.LSTM samples), with ours and as the control."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "peers")
sys.path.insert(0, PEERS)

from classify import classify, first_line


@pytest.mark.parametrize("text, reason", [
    ("E   torch.jit.frontend.NotSupportedError: Compiled functions can't take variable number",
     "TorchScript"),
    ("E   mlperf_fast.ops._checks.ArgumentTypeError: boxes has dtype torch.quint8; expected",
     "quantized tensors"),
    ("E   Failed: DID NOT RAISE <class 'RuntimeError'>", "exception type"),
    ("E   Failed: raised ValueError where torch raises TypeError: input_size", "exception type"),
    (("E   AssertionError: The values for attribute 'dtype' do not match: torch.float32 != "
      "torch.float16."), "dtype"),
    ("E   AssertionError: Tensor-likes are not close!\nE   Mismatched elements: 2 / 10",
     "values"),
    ("E   RuntimeError: apex.optimizers.FusedLAMB requires cuda extensions",
     "peer extension missing"),
    (("mlperf_fast/ops/transducer_joint.py:160: in transducer_joint\nE   mlperf_fast.ops._checks."
      "ArgumentValueError: activation must be one of ('relu',), got None"),
     "refused by mlperf_fast"),
    ("E   KeyError: 'x'", "KeyError"),
])
def test_classify(text, reason):
    assert classify(text) == reason


def test_first_line_is_the_error():
    text = "def f():\n>   raise X\nE   ValueError: bad value\nE   more"
    assert first_line(text) == "ValueError: bad value"


def test_device_map_reads_cuda_as_cpu():
    code = (f"import sys; sys.path.insert(0, {PEERS!r})\n"
            "import torch, device_map\n"
            "device_map.install()\n"
            "t = torch.rand(3, device='cuda'); z = torch.zeros(2, device=torch.device('cuda', 0))\n"
            "m = torch.nn.Linear(2, 2).cuda()\n"
            "torch.cuda.synchronize()\n"
            "print(t.device.type, z.device.type, t.to('cuda').device.type, t.cuda().device.type,"
            " m.weight.device.type)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu"] * 5


@pytest.mark.parametrize("original", [False, True], ids=["ours", "original"])
def test_lstm_suite_runs(tmp_path, original):
    """run.py end to end on torch's nn.LSTM error inputs (the samples' cheap part): the report
    says what was swapped, and every error input raises torch's error type."""
    pytest.importorskip("expecttest")  # torch.testing._internal imports it
    cmd = [sys.executable, os.path.join(PEERS, "run.py"), "lstm", "--out", str(tmp_path),
           *(["--original"] if original else []), "--", "-k", "error_input"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                         check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    mode = "original" if original else "ours"
    with open(tmp_path / f"lstm-{mode}-cpu.json") as f:
        data = json.load(f)
    assert data["mode"] == mode
    assert bool(data["swapped"]) is not original
    assert data["counts"].get("passed", 0) > 0
    assert set(data["counts"]) == {"passed"}, data["counts"]
    assert (tmp_path / f"lstm-{mode}-cpu.md").read_text().startswith(f"### lstm ({mode}, cpu)")
