"""Benchmark machinery shared by every file under benchmarks/: written once, used by all.

A benchmark file measures the baseline(s) and our implementation(s) on the same inputs in the same
run through the ``measure`` fixture. Each measurement is a pytest-benchmark entry (so
``--benchmark-*`` options, grouping and its table work as usual) and a row of the results file:

* time: median of CUDA-event-timed calls after warm-up (``mlperf_fast.harness.timing``);
* peak extra memory: ``max_memory_allocated`` during the calls above what was allocated before;
* floor: bytes moved over the device-to-device copy bandwidth, or FLOPs over the bf16 matmul rate,
  both measured in this session (machines are shared: a ratio within one run counts);
* ratio: every baseline's time over ours, within the same group.

At the end of the session the rows are merged into ``benchmarks/results/<device>.json`` and
rewritten as ``<device>.md``: a row is keyed by (op, metric, shape, implementation), op being the
benchmark file's name and metric its group as a slug; the environment is written once per file.
A baseline that raises (a peer's missing dtype path) is an error row, and the group's other rows
are kept. ``MLPERF_FAST_BENCH_RESULTS``
names another directory.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import torch

from mlperf_fast.harness import timing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shapes.py

RESULTS_DIR = Path(os.environ.get("MLPERF_FAST_BENCH_RESULTS",
                                  Path(__file__).resolve().parent / "results"))


@dataclass
class Row:
    group: str          # what is measured, in words, e.g. "LAMB step, BERT-large, fp32"
    impl: str           # e.g. "torch foreach", "mlperf_fast native"
    role: str           # "baseline" or "ours"
    shape: str
    median_ms: float | None
    min_ms: float | None
    repeats: int
    peak_extra_mib: float | None
    floor_ms: float | None
    floor_basis: str
    speedup: dict[str, float] = field(default_factory=dict)  # baseline impl -> its time / ours
    over_floor: float | None = None
    op: str = ""        # the op or step measured: the benchmark file's name, e.g. "lamb"
    metric: str = ""    # the group as a key, e.g. "lamb-step-bert-large-fp32"
    error: str = ""     # a baseline that raised: its exception (no times)


def row_key(row: dict) -> tuple[str, str, str, str]:
    """What identifies a row of the results file: (op, metric, shape, implementation)."""
    return (row.get("op", ""), row.get("metric") or _slug(row["group"]), row["shape"], row["impl"])


@dataclass
class Ceilings:
    copy_gbps: float          # device-to-device copy, bytes read + written per second / 1e9
    bf16_tflops: float        # dense bf16 matmul 8192^3


_rows: list[Row] = []
_ceilings: Ceilings | None = None


def _measure_ceilings() -> Ceilings:
    n = 1 << 28  # 1 GiB of fp32: large enough to defeat the 50 MB L2
    src = torch.empty(n, device="cuda").uniform_()
    dst = torch.empty_like(src)
    copy_s = timing.median(timing.time_fn(lambda: dst.copy_(src), warmup=3, repeat=20))
    del src, dst
    m = 8192
    a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    mm_s = timing.median(timing.time_fn(lambda: a @ b, warmup=3, repeat=20))
    return Ceilings(copy_gbps=2 * n * 4 / copy_s / 1e9, bf16_tflops=2 * m**3 / mm_s / 1e12)


@pytest.fixture(scope="session")
def ceilings() -> Ceilings:
    global _ceilings
    if not torch.cuda.is_available():
        pytest.skip("benchmarks need a CUDA GPU")
    if _ceilings is None:
        _ceilings = _measure_ceilings()
    return _ceilings


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU (none visible)")
    for item in items:
        item.add_marker(skip)


class Measure:
    """``measure(group, impl, fn, role=..., shape=..., bytes=..., flops=...)`` times ``fn``."""

    def __init__(self, benchmark, ceilings: Ceilings, op: str = "") -> None:
        self._benchmark = benchmark
        self._ceilings = ceilings
        self._used = False
        self._op = op

    def __call__(self, group: str, impl: str, fn: Callable[[], object], *, role: str = "ours",
                 shape: str = "", bytes: float | None = None, flops: float | None = None,
                 warmup: int = 5, repeat: int = 30, min_time_s: float = 0.5) -> Row:
        if role not in ("baseline", "ours"):
            raise ValueError(f"role must be 'baseline' or 'ours', got {role!r}")
        keys = dict(op=self._op, metric=_slug(group))
        torch.cuda.synchronize()
        try:
            fn()  # first call outside the memory window: compiles, autotunes, allocates caches
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            samples = timing.time_fn(fn, warmup=warmup, repeat=repeat, min_time_s=min_time_s)
        except Exception as e:  # noqa: BLE001 - a baseline's failure is a result, not ours
            if role != "baseline":
                raise
            # A baseline that cannot run these inputs (e.g. a peer's missing bf16 path) is an
            # error row; the group's other rows are measured and kept.
            row = Row(group=group, impl=impl, role=role, shape=shape, median_ms=None,
                      min_ms=None, repeats=0, peak_extra_mib=None, floor_ms=None,
                      floor_basis="", error=f"{type(e).__name__}: {str(e)[:200]}", **keys)
            _rows.append(row)
            return row
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        floor_s, basis = None, ""
        if bytes is not None:
            floor_s = bytes / (self._ceilings.copy_gbps * 1e9)
            basis = f"{bytes / 1e9:.3f} GB at {self._ceilings.copy_gbps:.0f} GB/s"
        if flops is not None:
            flop_s = flops / (self._ceilings.bf16_tflops * 1e12)
            if floor_s is None or flop_s > floor_s:
                floor_s = flop_s
                basis = f"{flops / 1e12:.3f} TFLOP at {self._ceilings.bf16_tflops:.0f} TFLOP/s"
        row = Row(group=group, impl=impl, role=role, shape=shape,
                  median_ms=timing.median(samples) * 1e3, min_ms=min(samples) * 1e3,
                  repeats=len(samples), peak_extra_mib=round(peak, 1),
                  floor_ms=None if floor_s is None else floor_s * 1e3, floor_basis=basis, **keys)
        if row.floor_ms:
            row.over_floor = row.median_ms / row.floor_ms
        _rows.append(row)
        if not self._used:
            # pytest-benchmark allows one measurement per test; it keeps the first, synchronized
            # so that its wall-clock timer sees the GPU work.
            self._used = True
            self._benchmark.group = group
            self._benchmark.extra_info.update(impl=impl, role=role, shape=shape,
                                              median_ms_cuda_events=row.median_ms)

            def synced():
                fn()
                torch.cuda.synchronize()

            self._benchmark.pedantic(synced, rounds=5, iterations=1, warmup_rounds=1)
        return row


@pytest.fixture
def measure(benchmark, ceilings, request) -> Measure:
    name = request.module.__name__.rsplit(".", 1)[-1]
    return Measure(benchmark, ceilings, name.removeprefix("bench_"))


def _environment() -> dict[str, str]:
    from mlperf_fast.info import collect

    info = collect()
    keys = ("GPU", "driver", "torch", "torch CUDA", "triton", "mlperf_fast", "_C CUDA")
    return {k: info.get(k, "n/a") for k in keys}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _fill_speedups(rows: list[Row]) -> None:
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    for group_rows in by_group.values():
        baselines = [r for r in group_rows if r.role == "baseline" and not r.error]
        for row in group_rows:
            if row.error:
                continue
            row.speedup = {b.impl: round(b.median_ms / row.median_ms, 3)
                           for b in baselines if b is not row}


def _env_key(env: dict[str, str], environments: dict[str, dict]) -> str:
    """The key of ``env`` in ``environments`` (added if new): a short hash of its contents."""
    import hashlib

    key = hashlib.sha1(json.dumps(env, sort_keys=True).encode()).hexdigest()[:8]
    environments.setdefault(key, env)
    return key


def _markdown(env: dict[str, str], ceilings: dict, rows: list[dict],
              environments: dict[str, dict] | None = None) -> str:
    lines = [f"# Benchmark results: {env.get('GPU', '?')}", ""]
    for key, e in (environments or {"": env}).items():
        lines += [(f"Environment `{key}`: " if key else "") + ", ".join(f"{k}: {v}"
                                                                        for k, v in e.items()), ""]
    if ceilings:
        lines += [f"Measured ceilings: device-to-device copy {ceilings['copy_gbps']:.0f} GB/s "
                  f"(read + write), bf16 matmul {ceilings['bf16_tflops']:.0f} TFLOP/s.", ""]
    lines += ["Times are medians of CUDA-event-timed calls; speedup is the baseline's time over "
              "this row's, measured in the same run; floor is bytes over the measured copy "
              "bandwidth (or FLOPs over the matmul rate).", ""]
    lines += ["| op | metric | group | shape | implementation | median ms | speedup vs baselines "
              "| floor ms | x floor | peak extra MiB | measured | env |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        op, metric = row_key(r)[:2]
        if r.get("error"):
            lines.append(f"| {op} | {metric} | {r['group']} | {r['shape']} | {r['impl']} | error | "
                         f"{r['error']} |  |  |  | {r.get('when', '')} | {r.get('env', '')} |")
            continue
        speed = ", ".join(f"{v:.2f}x {k}" for k, v in r["speedup"].items()) if r["role"] == "ours" \
            else "(baseline)"
        floor = f"{r['floor_ms']:.3f}" if r["floor_ms"] else ""
        over = f"{r['over_floor']:.2f}" if r["over_floor"] else ""
        lines.append(f"| {op} | {metric} | {r['group']} | {r['shape']} | {r['impl']} | "
                     f"{r['median_ms']:.3f} | {speed} | {floor} | {over} | {r['peak_extra_mib']} "
                     f"| {r.get('when', '')} | {r.get('env', '')} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    if not _rows or _ceilings is None:
        return
    _fill_speedups(_rows)
    env = _environment()
    slug = _slug(env.get("GPU", "unknown").split("(")[0].replace("1x ", ""))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{slug}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # Each distinct environment is written once, under a short key that its rows name; rows of
    # older files (the environment repeated in each, no op or metric) are converted on reading.
    environments = dict(old.get("environments", {}))
    merged = {}
    for r in old.get("rows", []):
        if isinstance(r.get("environment"), dict):
            r["env"] = _env_key(r.pop("environment"), environments)
        r.setdefault("env", _env_key(old["environment"], environments) if "environment" in old
                     else "")
        r.setdefault("metric", _slug(r["group"]))
        r.setdefault("op", "")
        r.setdefault("error", "")
        merged[row_key(r)] = r
    new_metrics = {(row.op, row.metric) for row in _rows}
    # A group measured again is replaced whole, so its ratios stay within one run.
    merged = {k: v for k, v in merged.items() if k[:2] not in new_metrics
              and (k[0] or (v["metric"] not in {m for _, m in new_metrics}))}
    key = _env_key(env, environments)
    for row in _rows:
        merged[row_key(asdict(row))] = {**asdict(row), "when": when, "env": key}
    used = {r["env"] for r in merged.values()}
    environments = {k: v for k, v in environments.items() if k in used}
    rows = sorted(merged.values(), key=lambda r: (r["op"], r["metric"], r["role"] != "baseline",
                                                  r["impl"]))
    doc = {"environment": env, "environments": environments, "ceilings": asdict(_ceilings),
           "rows": rows}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS_DIR / f"{slug}.md").write_text(_markdown(env, doc["ceilings"], rows,
                                                      doc["environments"]))
