"""Reason classes for a failed peer test: one short name per kind of difference, so that a table of
hundreds of failures reads as a handful of causes.

A failure's class is the first rule whose pattern matches the text pytest shows for it (the
exception, its message and the traceback). The order matters: a TorchScript error raised inside a
value comparison is still TorchScript.
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Rule(NamedTuple):
    name: str
    pattern: re.Pattern
    meaning: str


def _rule(name: str, pattern: str, meaning: str) -> Rule:
    return Rule(name, re.compile(pattern, re.MULTILINE | re.DOTALL), meaning)


RULES: tuple[Rule, ...] = (
    _rule("no CUDA", r"Torch not compiled with CUDA|No CUDA GPUs are available|Found no NVIDIA "
          r"driver|CUDA driver initialization failed", "the test needs a GPU"),
    _rule("peer extension missing", r"No module named '(amp_C|\w+_cuda|fused_\w+)'|requires cuda "
          r"extensions|MultiTensorApply is not available|_assert_has_ops|Couldn't load custom C\+\+ "
          r"ops", "the peer's own compiled code is not built here"),
    _rule("TorchScript", r"torch/jit/|torch\.jit\.|TorchScript|NotSupportedError",
          "torch.jit.script of the function"),
    _rule("quantized tensors", r"quint8|qint8|qint32|Quantized|quantize_per_tensor",
          "quantized inputs"),
    _rule("error message", r"Regex pattern did not match|does not match \"", "the error's text"),
    _rule("exception type", r"DID NOT RAISE|where \w+ raises|pytest\.raises\(|assertRaises", "the error's type"),
    _rule("dtype", r"[Dd]types? .*(do not match|are not equal|!=)|attribute 'dtype'",
          "the result's dtype"),
    _rule("shape", r"[Ss]hapes? .*(do not match|are not equal|mismatch)|attribute 'shape'|"
          r"size of tensor a .* must match", "the result's shape"),
    _rule("refused by mlperf_fast", r"mlperf_fast/.*(ValueError|TypeError|Error: )",
          "an argument our function does not take"),
    _rule("values", r"Tensor-likes are not (close|equal)|Mismatched elements|Scalars are not "
          r"(close|equal)|not less than or equal to", "the numbers differ"),
)


def classify(text: str) -> str:
    """The reason class of a failure from pytest's report text (``report.longreprtext``)."""
    for rule in RULES:
        if rule.pattern.search(text):
            return rule.name
    last = _last_exception(text)
    return last or "other"


def _last_exception(text: str) -> str | None:
    """The exception type of pytest's ``E   SomeError: ...`` lines (the last one raised)."""
    found = re.findall(r"^E\s+([A-Za-z_][\w.]*(Error|Exception|Interrupt))\b", text, re.MULTILINE)
    return found[-1][0].rsplit(".", 1)[-1] if found else None


def first_line(text: str, limit: int = 160) -> str:
    """The first ``E`` line of a report (the error as pytest shows it), shortened."""
    for line in text.splitlines():
        if line.startswith("E "):
            line = line[1:].strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    lines = [s for s in text.strip().splitlines() if s.strip()]
    tail = lines[-1].strip() if lines else ""
    return tail if len(tail) <= limit else tail[: limit - 3] + "..."
