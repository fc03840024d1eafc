import os
import sys

import pytest
import torch

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
