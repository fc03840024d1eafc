"""The module under test of the ``lstm`` peer suite: torch.nn.LSTM (original) or
mlperf_fast.nn.LSTM (ours), read by lstm/test_lstm_samples.py."""
from __future__ import annotations

import torch

MODULE = torch.nn.LSTM


def install() -> list[str]:
    global MODULE
    from mlperf_fast.nn import LSTM

    MODULE = LSTM
    return ["torch.nn.LSTM (as the module under test)"]
