"""Cases of the fuzz runner's own test: one of each outcome."""
import os
import signal
import time

from fuzz_runner import Case


def returns():
    pass


def raises_clear():
    raise ValueError("lr must be >= 0, got -1")


def raises_other():
    raise RuntimeError("deep failure")


def wrong_result():
    assert 1 + 1 == 3, "wrong sum"


def crashes():
    os.kill(os.getpid(), signal.SIGSEGV)


def hangs():
    time.sleep(60)


def returns_again():
    pass


def on_meta():
    import torch
    assert torch.empty(1).device.type == "meta", "the default device did not reach the child"


CASES = [
    Case("returns", "returns"),
    Case("clear error", "raises_clear", raises=("ValueError",), names=("lr",)),
    Case("unclear error", "raises_other", raises=("ValueError",), names=("lr",)),
    Case("silent", "returns_again", raises=("ValueError",)),
    Case("wrong result", "wrong_result"),
    Case("crash", "crashes"),
    Case("after the crash", "returns"),
]
