"""Fuzz cases run in child interpreters, so that a crash (a signal, heap corruption) or a hang is a
failed case and not a lost test worker.

A case module (``tests/fuzz/cases_*.py``) holds a list ``CASES`` of :class:`Case`: a name, the
function to call (a module-level callable of that module, taking no arguments) and what must come
of it. ``run_cases`` runs them in batches, one child process at a time; the child writes the name
of the case it is about to run, and its outcome once done, to a journal file, so that when a child
dies the case that killed it is known, marked ``crash`` (or ``hang`` after the timeout), and the
rest of the batch goes on in a new child. Starting one interpreter per case would cost seconds of
torch import each: this costs one per crash.

Outcomes: ``ok`` (the call returned), ``wrong`` (it raised AssertionError: the case's own check
of the result failed), ``error`` (it raised; the exception's type and message are
kept), ``crash`` (the child died by a signal or exited without an outcome), ``hang`` (the timeout).
``classify`` compares an outcome with the case's expectation:

  * ``correct``: expected success and it returned (the case checks its own result and raises
    AssertionError on a wrong one: that comes back as ``silent``);
  * ``clear``: expected an error of one of the listed types whose message names the argument
    (every listed substring appears, case-insensitively);
  * ``unclear``: it raised, but a type or message other than the expected one;
  * ``silent``: expected an error and the call returned, or it returned a wrong result;
  * ``crash`` / ``hang``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Case:
    """One call. ``fn`` is the name of a module-level function of the case module.
    ``raises``: the accepted exception types' names (empty: the call must succeed); ``names``:
    substrings that the message must contain (the argument's name, the bad value)."""

    name: str
    fn: str
    raises: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


@dataclass
class Outcome:
    case: Case
    kind: str  # ok | wrong | error | crash | hang
    error_type: str = ""
    message: str = ""
    verdict: str = ""
    mro: list[str] = field(default_factory=list)  # the exception's class names, most derived first


_CHILD = r"""
import importlib, json, os, sys, traceback
if os.environ.get("MLPERF_FAST_FUZZ_DEVICE"):
    import torch
    torch.set_default_device(os.environ["MLPERF_FAST_FUZZ_DEVICE"])
module = importlib.import_module(sys.argv[1])
journal = open(sys.argv[2], "a", buffering=1)
for i, fn in zip(sys.argv[3::2], sys.argv[4::2]):
    journal.write(json.dumps({"start": i}) + "\n")
    journal.flush()
    try:
        getattr(module, fn)()
        rec = {"done": i, "kind": "ok"}
    except AssertionError as e:
        rec = {"done": i, "kind": "wrong", "type": "AssertionError", "message": str(e)[:500]}
    except BaseException as e:  # noqa: BLE001 - every outcome is recorded
        rec = {"done": i, "kind": "error", "type": type(e).__name__,
               "mro": [c.__name__ for c in type(e).__mro__], "message": str(e)[:500]}
    journal.write(json.dumps(rec) + "\n")
    journal.flush()
"""


def _run_batch(module: str, calls: list[tuple[str, str]], timeout: float, env: dict[str, str]
               ) -> tuple[dict[str, dict], str | None, str]:
    """Runs ``calls`` ((key, function name) pairs) in one child; returns (records of the finished
    cases by key, the key of the case it died in or None, how it died)."""
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as j:
        path = j.name
    try:
        args = [a for call in calls for a in call]
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, module, path, *args],
                                  capture_output=True, text=True, timeout=timeout, env=env,
                                  cwd=HERE)
            how = (f"signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        except subprocess.TimeoutExpired:
            how = "hang"
        records, started = {}, None
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if "start" in rec:
                    started = rec["start"]
                else:
                    records[rec["done"]] = rec
                    started = None
        return records, started, how
    finally:
        os.unlink(path)


def run_cases(module: str, cases: Sequence[Case], timeout: float = 300.0,
              env: dict[str, str] | None = None, device: str | None = None) -> list[Outcome]:
    """Every case of ``cases`` (functions of the importable ``module``), classified. ``timeout``
    bounds one child's run: a child that outlives it is killed and its current case is a hang.
    ``device`` (e.g. "cuda") is the child's default device (``torch.set_default_device``): the
    cases' tensors and generators are made there, so the same cases exercise its kernels."""
    child_env = {**os.environ, **(env or {})}
    if device is not None:
        child_env["MLPERF_FAST_FUZZ_DEVICE"] = device
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, child_env.get("PYTHONPATH", "")) if p)
    keys = [str(i) for i in range(len(cases))]
    by_key = dict(zip(keys, cases))
    pending = keys
    results: dict[str, Outcome] = {}
    while pending:
        records, died_in, how = _run_batch(module, [(k, by_key[k].fn) for k in pending],
                                           timeout, child_env)
        for key, rec in records.items():
            out = Outcome(by_key[key], rec["kind"], rec.get("type", ""), rec.get("message", ""))
            out.mro = rec.get("mro", [out.error_type])
            results[key] = out
        if died_in is None:
            for key in pending:  # the child died before its first case (an import error)
                if key not in results:
                    results[key] = Outcome(by_key[key], "crash", message=how)
            break
        results[died_in] = Outcome(by_key[died_in], "hang" if how == "hang" else "crash",
                                   message=how)
        pending = [k for k in pending if k not in results]
    outcomes = [results[k] for k in keys]
    for o in outcomes:
        o.verdict = classify(o)
    return outcomes


def classify(o: Outcome) -> str:
    c = o.case
    if o.kind in ("crash", "hang"):
        return o.kind
    if o.kind == "wrong":
        return "silent"
    if not c.raises:
        return "correct" if o.kind == "ok" else "unclear"
    if o.kind == "ok":
        return "silent"
    type_ok = any(t in (o.mro or [o.error_type]) for t in c.raises)
    msg = o.message.lower()
    names_ok = all(n.lower() in msg for n in c.names)
    return "clear" if type_ok and names_ok else "unclear"


def table(outcomes: Sequence[Outcome]) -> str:
    """A Markdown table of verdict counts, then one line per case that is not correct or clear."""
    counts = Counter(o.verdict for o in outcomes)
    lines = ["| verdict | cases |", "|---|---:|"]
    lines += [f"| {v} | {counts.get(v, 0)} |"
              for v in ("correct", "clear", "unclear", "silent", "crash", "hang")]
    for o in outcomes:
        if o.verdict not in ("correct", "clear"):
            lines.append(f"- {o.verdict}: {o.case.name}: {o.kind} {o.error_type} {o.message[:200]}")
    return "\n".join(lines)


def expect_all_good(outcomes: Sequence[Outcome], allowed: Callable[[Outcome], bool] | None = None
                    ) -> None:
    """Fails with the table unless every case is correct or clear (or ``allowed``)."""
    bad = [o for o in outcomes if o.verdict not in ("correct", "clear")
           and not (allowed is not None and allowed(o))]
    assert not bad, "\n" + table(outcomes)
