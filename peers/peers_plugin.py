"""pytest plugin of the peer-suite harness (loaded by run.py with ``-p peers_plugin``).

Before the peer's test modules are imported it installs the swap of the peer named by
``PEERS_PEER`` (``swap_<peer>.install()``: the peer's functions replaced by mlperf_fast's) unless
``PEERS_MODE`` is ``original``, and, with ``PEERS_MAP_CUDA=1``, maps the device "cuda" to the CPU
(see ``device_map``). While the tests run it records each one's outcome, and for a failure its
reason class (``classify``, or the label of a known difference the swap module lists in
``KNOWN``); at the end it writes them as JSON to ``PEERS_REPORT``.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from classify import classify, first_line


class _Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.tests: dict[str, dict] = {}
        self.swapped: list[str] = []
        # (node id pattern, failure text pattern or None, label): the swap's known differences,
        # each described in peers/README.md; a failure they match is shown under that label.
        self.known: list[tuple[str, str | None, str]] = []
        self.start = time.time()

    def add(self, report) -> None:
        entry = self.tests.setdefault(report.nodeid, {"id": report.nodeid, "outcome": "passed"})
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            elif report.failed and report.when != "call":
                outcome = "error"
            if entry["outcome"] in ("failed", "error") and outcome == "passed":
                return  # a teardown after a failure does not undo it
            entry["outcome"] = outcome
            if report.failed:
                text = report.longreprtext
                entry["reason"] = entry["class"] = classify(text)
                entry["message"] = first_line(text)
                for pattern, text_pattern, label in self.known:
                    if re.search(pattern, report.nodeid) and (
                            text_pattern is None or re.search(text_pattern, text)):
                        entry["reason"], entry["known"] = label, True
                        break
            elif report.skipped and not hasattr(report, "wasxfail"):
                longrepr = report.longrepr
                entry["message"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)

    def write(self) -> None:
        counts: dict[str, int] = {}
        for t in self.tests.values():
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        data = {"peer": os.environ.get("PEERS_PEER"), "mode": os.environ.get("PEERS_MODE"),
                "device": os.environ.get("PEERS_DEVICE"), "swapped": self.swapped,
                "seconds": round(time.time() - self.start, 1), "counts": counts,
                "tests": list(self.tests.values())}
        with open(self.path, "w") as f:
            json.dump(data, f, indent=1)


_recorder: _Recorder | None = None


def pytest_configure(config) -> None:
    global _recorder
    peer = os.environ.get("PEERS_PEER")
    if not peer:
        return
    if os.environ.get("PEERS_MAP_CUDA") == "1":
        import device_map

        device_map.install()
    swap = importlib.import_module(f"swap_{peer}")
    if hasattr(swap, "prepare"):
        swap.prepare(os.environ.get("PEERS_SOURCE", ""))
    swapped = []
    if os.environ.get("PEERS_MODE") != "original":
        swapped = swap.install()
    if os.environ.get("PEERS_REPORT"):
        _recorder = _Recorder(os.environ["PEERS_REPORT"])
        _recorder.swapped = swapped
        if swapped:
            _recorder.known = list(getattr(swap, "KNOWN", ()))


def pytest_runtest_logreport(report) -> None:
    if _recorder is not None:
        _recorder.add(report)


def pytest_collectreport(report) -> None:
    # A test module that cannot be imported counts as one error, not as zero tests.
    if _recorder is not None and report.failed:
        text = report.longreprtext
        _recorder.tests[report.nodeid] = {"id": report.nodeid, "outcome": "error",
                                          "reason": classify(text), "message": first_line(text)}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    if _recorder is not None:
        _recorder.write()
