"""The verified cache of generated data: embedded data sets, trained tokenizers, preprocessed
files. Every artefact is a folder ``<cache root>/<kind>/<name>-<key>``, where the key hashes
everything its content depends on (the generator's settings and version). It is built in a
temporary folder beside it, gets a manifest of every file's size and SHA-256, written last, and
is moved into place in one rename: a folder without a valid manifest is incomplete. Each use
verifies it, and a damaged or partial one is rebuilt. Temporary folders left by a killed build
are removed by the next build of the same kind.

The root is ``$MLPERF_FAST_CACHE``, else ``$XDG_CACHE_HOME/mlperf_fast``, else
``~/.cache/mlperf_fast``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from mlperf_fast.harness.workload import DataError

MANIFEST = "MANIFEST.json"
_TMP_PREFIX = ".tmp-"


def cache_root() -> str:
    return os.environ.get("MLPERF_FAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "mlperf_fast")


def cache_key(settings: Any) -> str:
    """12 hex digits of the SHA-256 of ``settings`` (a dataclass, dict, list or scalar) as JSON."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = dataclasses.asdict(settings)
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def artefact_dir(kind: str, name: str, settings: Any) -> str:
    """Where the artefact of these settings lives (whether or not it exists yet)."""
    return os.path.join(cache_root(), kind, f"{name}-{cache_key(settings)}")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: str, meta: Any = None) -> None:
    """Record every file under ``root`` (size and SHA-256) in ``root/MANIFEST.json``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if rel != MANIFEST:
                files[rel] = [os.path.getsize(p), sha256_file(p)]
    with open(os.path.join(root, MANIFEST), "w") as f:
        json.dump({"meta": meta, "files": dict(sorted(files.items()))}, f)


def verify(root: str) -> str | None:
    """None if ``root`` is complete and intact; else what is wrong, naming the file."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isdir(root):
        return f"{root} does not exist"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{path} is missing or unreadable ({type(e).__name__}: {e})"
    for rel, (size, digest) in files.items():
        p = os.path.join(root, rel)
        if not os.path.exists(p):
            return f"{p} is missing"
        if os.path.getsize(p) != size or sha256_file(p) != digest:
            return f"{p} is corrupt (its size or checksum differs from {MANIFEST})"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_builds(parent: str) -> None:
    """Remove temporary build folders in ``parent`` whose building process (on this host) is
    gone: what a killed build leaves behind."""
    if not os.path.isdir(parent):
        return
    host = socket.gethostname()
    for entry in os.listdir(parent):
        if not entry.startswith(_TMP_PREFIX):
            continue
        parts = entry[len(_TMP_PREFIX):].split("-")
        try:
            owner_host, pid = "-".join(parts[:-2]), int(parts[-2])
        except (ValueError, IndexError):
            owner_host, pid = host, -1  # an unnamed leftover: nobody owns it
        if owner_host == host and not _pid_alive(pid):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def build_verified(root: str, build: Callable[[str], None], meta: Any = None,
                   log: Callable[[str], None] = print, what: str = "data") -> str:
    """``root``, verified; built (or rebuilt, if damaged) by ``build(tmp_folder)`` first.

    ``build`` writes the artefact's files into the folder it is given; the manifest is written
    after it returns and the folder is renamed to ``root``. Raises DataError if the result does
    not verify.
    """
    problem = verify(root)
    if problem is None:
        return root
    parent = os.path.dirname(root)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise DataError(f"the cache folder {parent} cannot be created ({e}); set "
                        "MLPERF_FAST_CACHE to a writable folder") from e
    remove_stale_builds(parent)
    if os.path.exists(root):
        log(f"{what} at {root} is damaged ({problem}); rebuilding it")
    else:
        log(f"building {what} at {root}")
    tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-",
                           dir=parent)
    try:
        build(tmp)
        write_manifest(tmp, meta)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    problem = verify(root)
    if problem is not None:
        raise DataError(f"{what} could not be written: {problem}")
    return root


def cached(kind: str, name: str, settings: Any, build: Callable[[str], None],
           log: Callable[[str], None] = print, what: str | None = None) -> str:
    """The artefact of ``settings`` in the cache, built on rank 0 first if needed (the other
    ranks wait for it, then verify it themselves). Returns its folder."""
    from mlperf_fast.harness.distributed import rank0_first

    root = artefact_dir(kind, name, settings)
    meta = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings
    return rank0_first(lambda: build_verified(root, build, meta=meta, log=log,
                                              what=what or f"{kind} {name}"))
