"""The MLPerf log of a run, written through mlperf-logging's mllog.

Only rank 0 writes; on other ranks every call is a no-op. Lines go to ``<run>/mlperf.log`` and,
unless silenced, to stdout (through tqdm so that a progress bar stays intact).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from mlperf_logging.mllog import constants as C  # noqa: N812  (MLPerf's own key names)
from mlperf_logging.mllog.mllog import MLLogger

__all__ = ["C", "MLLog", "now_ms"]


def now_ms() -> int:
    return int(time.time() * 1000)


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


class MLLog:
    """One run's MLPerf log. ``append`` continues an existing file from byte ``truncate_at``
    (a resumed run drops what it logged after its last checkpoint: those blocks run again)."""

    _count = 0

    def __init__(
        self,
        path: str | None,
        *,
        enabled: bool = True,
        echo: bool = True,
        truncate_at: int | None = None,
    ) -> None:
        self.path = path
        self.enabled = enabled and path is not None
        self._file_handler: logging.FileHandler | None = None
        if not self.enabled:
            return
        MLLog._count += 1
        logger = logging.getLogger(f"mlperf_fast.mllog.{os.getpid()}.{MLLog._count}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        if truncate_at is not None:
            with open(path, "r+b") as f:
                f.truncate(truncate_at)
        self._file_handler = logging.FileHandler(path, mode="a" if truncate_at is not None else "w")
        logger.addHandler(self._file_handler)
        if echo:
            logger.addHandler(_EchoHandler())
        self._logger = logger
        # Our wrapper adds one frame between the caller and mllog.
        self._mllog = MLLogger(logger=logger, default_stack_offset=2, root_dir=_package_root())

    def event(self, key: str, value: Any = None, metadata: dict | None = None,
              time_ms: int | None = None) -> None:
        if self.enabled:
            self._mllog.event(key=key, value=value, metadata=metadata, time_ms=time_ms)

    def start(self, key: str, value: Any = None, metadata: dict | None = None,
              time_ms: int | None = None) -> None:
        if self.enabled:
            self._mllog.start(key=key, value=value, metadata=metadata, time_ms=time_ms)

    def end(self, key: str, value: Any = None, metadata: dict | None = None,
            time_ms: int | None = None) -> None:
        if self.enabled:
            self._mllog.end(key=key, value=value, metadata=metadata, time_ms=time_ms)

    def offset(self) -> int:
        """Bytes written so far (flushed): where a resumed run cuts the file."""
        if not self.enabled:
            return 0
        self._file_handler.flush()
        return os.path.getsize(self.path)

    def close(self) -> None:
        if self.enabled:
            for h in list(self._logger.handlers):
                h.flush()
                h.close()
                self._logger.removeHandler(h)
            self.enabled = False


def _package_root() -> str:
    """The folder holding the mlperf_fast package: trimmed from the call sites in the log."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
