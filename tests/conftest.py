import importlib.util
import os
import sys
from dataclasses import dataclass

import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. The variable is
# read when a kernel is defined, so it is set before any test imports mlperf_fast.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Test helpers (e.g. tests/harness/toy.py) import as top-level modules.
sys.path.insert(0, os.path.join(HERE, "harness"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none found); run scripts/gpu_check.sh there")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng_seed(request) -> int:
    """A fresh seed for every test run, printed on failure so a failing draw can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return seed


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> None:
    """The data cache (MLPERF_FAST_CACHE) in the test's own folder: embedded sets are built
    afresh and nothing is left in, or read from, the user's cache."""
    monkeypatch.setenv("MLPERF_FAST_CACHE", str(tmp_path / "cache"))


@dataclass(frozen=True)
class Backend:
    """One way of running an op: ``name`` is the ops' ``backend=`` argument."""

    name: str
    device: torch.device

    def __str__(self) -> str:
        return f"{self.name}-{self.device.type}"


_HAS_TRITON = importlib.util.find_spec("triton") is not None
BACKEND_PARAMS = [
    pytest.param(Backend("native", torch.device("cpu")), id="native-cpu"),
    pytest.param(Backend("triton", torch.device("cpu")), id="triton-interpreter", marks=pytest.mark.skipif(
        not _HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1",
        reason="Triton's interpreter runs only where TRITON_INTERPRET=1 (set without a GPU)")),
    pytest.param(Backend("torch", torch.device("cpu")), id="torch-cpu"),
    pytest.param(Backend("native", torch.device("cuda")), id="native-cuda", marks=pytest.mark.cuda),
    pytest.param(Backend("triton", torch.device("cuda")), id="triton-cuda", marks=pytest.mark.cuda),
    pytest.param(Backend("torch", torch.device("cuda")), id="torch-cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> Backend:
    """Every backend of an op, on its device: CPU ones run everywhere, CUDA ones on a GPU."""
    return request.param
