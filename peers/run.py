"""Run a peer library's own tests with the peer's functions replaced by mlperf_fast's.

    python3 peers/run.py torchvision --source PATH_TO_A_TORCHVISION_CHECKOUT [--original]
    python3 peers/run.py torchaudio  --source PATH_TO_A_TORCHAUDIO_CHECKOUT  [--original]
    python3 peers/run.py apex        --source PATH_TO_AN_APEX_CHECKOUT       [--original]
    python3 peers/run.py lstm                                                [--original]

Arguments after ``--`` go to pytest (``-- -k nms_ref``, ``-- -x``).

Each peer's selection (its test files and classes for the functions mlperf_fast provides) runs
under pytest with the plugin ``peers_plugin``, which swaps the functions in before the tests are
imported (``swap_<peer>.py``); ``--original`` runs the same selection without the swap, the
control that shows the selection itself passes here. The result is printed as a table (passed,
failed, skipped; the failures by reason class) and written as JSON and Markdown to ``--out``.
Nothing is downloaded: the checkout is the user's (``lstm`` needs none: its inputs are torch's
own ``module_db``). The peer itself (torchvision, torchaudio) must be importable; apex's Python
package is taken from the checkout when apex is not installed.

On a machine without a GPU, apex's tests (written for device "cuda") run on the CPU through
``device_map.py``; with a GPU they run as written, and the GPU-only test files are added.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@dataclass(frozen=True)
class Peer:
    """What to run for one peer: test paths (pytest node ids, relative to the checkout, or to
    this folder when ``source`` is not needed), a -k expression, and the paths added on a GPU."""

    module: str
    paths: tuple[str, ...]
    cuda_paths: tuple[str, ...] = ()
    keyword: str | None = None
    needs_source: bool = True
    map_cuda: bool = False          # run device="cuda" tests on the CPU when there is no GPU


PEERS = {
    "torchvision": Peer(
        module="torchvision",
        paths=("test/test_ops.py::TestNMS", "test/test_ops.py::TestBoxIou",
               "test/test_ops.py::TestFocalLoss")),
    "torchaudio": Peer(
        module="torchaudio",
        paths=tuple(f"test/torchaudio_unittest/{p}_cpu_test.py" for p in (
            "functional/functional", "functional/autograd", "functional/torchscript_consistency",
            "transforms/autograd", "transforms/torchscript_consistency")),
        cuda_paths=tuple(f"test/torchaudio_unittest/{p}_cuda_test.py" for p in (
            "functional/functional", "functional/autograd", "functional/torchscript_consistency",
            "transforms/autograd", "transforms/torchscript_consistency")),
        keyword="rnnt"),
    "apex": Peer(
        module="apex",
        paths=("tests/L0/run_optimizers/test_fused_optimizer.py::TestFusedAdam",
               "tests/L0/run_optimizers/test_fused_optimizer.py::TestFusedSGD",
               "tests/L0/run_optimizers/test_lamb.py::TestFusedLAMB",
               "apex/contrib/test/transducer/test_transducer_loss.py",
               "apex/contrib/test/transducer/test_transducer_joint.py"),
        cuda_paths=("tests/L0/run_optimizers/test_adam.py",),
        map_cuda=True),
    "lstm": Peer(
        module="torch", paths=("lstm/test_lstm_samples.py",), needs_source=False),
}


def _git_rev(path: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _describe_source(source: str | None, label: str | None) -> str:
    rev = _git_rev(source) if source else None
    if rev:
        return f"commit {rev}" + (f", {label}" if label else "")
    return label or ("not a git checkout" if source else "no checkout")


def _versions(python: str, module: str, source: str | None) -> dict[str, str]:
    """torch's and the peer's versions as the test interpreter sees them (the peer imported from
    the checkout if it is not installed, as swap_apex does)."""
    code = ("import json, importlib, importlib.util, sys, torch\n"
            f"if importlib.util.find_spec({module!r}) is None and {source!r}:\n"
            f"    sys.path.insert(0, {source!r})\n"
            f"m = importlib.import_module({module!r})\n"
            "print(json.dumps({'torch': torch.__version__, "
            "'peer': str(getattr(m, '__version__', 'unknown')), "
            "'cuda': str(torch.cuda.is_available())}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"torch": "?", "peer": f"not importable ({out.stderr.strip().splitlines()[-1:]})",
                "cuda": "?"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_command(peer: Peer, source: str | None, device: str, python: str,
                  extra: list[str]) -> tuple[list[str], str, list[str]]:
    """(pytest command, working directory, selected paths that the checkout lacks)."""
    root = source if peer.needs_source else HERE
    paths = list(peer.paths) + (list(peer.cuda_paths) if device == "cuda" else [])
    present = [p for p in paths if os.path.exists(os.path.join(root, p.split("::")[0]))]
    missing = [p for p in paths if p not in present]
    cmd = [python, "-m", "pytest", "-p", "peers_plugin", "-p", "no:cacheprovider", "-q", "-rN",
           "--tb=short", *present]
    if peer.keyword:
        cmd += ["-k", peer.keyword]
    return cmd + extra, root, missing


def _reason(t: dict) -> str:
    """A failure's reason, marked when it is a known difference described in peers/README.md."""
    return t.get("reason", "other") + (" (documented)" if t.get("known") else "")


def summarize(data: dict) -> dict:
    """Counts by outcome and failures by reason (known differences marked "documented")."""
    reasons: dict[str, int] = {}
    for t in data["tests"]:
        if t["outcome"] in ("failed", "error"):
            reasons[_reason(t)] = reasons.get(_reason(t), 0) + 1
    return {"counts": data["counts"], "reasons": dict(sorted(reasons.items(),
                                                             key=lambda kv: -kv[1]))}


def _failures_by_test(tests: list[dict]) -> dict[tuple[str, str], tuple[int, str]]:
    """Failures grouped by test function (the node id without its parameters) and reason:
    (count, the first failure's message)."""
    groups: dict[tuple[str, str], tuple[int, str]] = {}
    for t in tests:
        if t["outcome"] in ("failed", "error"):
            key = (t["id"].split("[", 1)[0], _reason(t))
            count, msg = groups.get(key, (0, t.get("message", "")))
            groups[key] = (count + 1, msg)
    return groups


def _line(counts: dict) -> str:
    order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    ran = sum(counts.get(k, 0) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return f"{ran} run: " + ", ".join(parts) if parts else "no tests"


def to_markdown(data: dict) -> str:
    s = summarize(data)
    meta = data["meta"]
    lines = [f"### {data['peer']} ({data['mode']}, {data['device']})", "",
             f"{_line(s['counts'])}", "",
             (f"- peer: {meta['peer_version']}; source: {meta['source']} "
              f"({meta['source_commit']})"),
             (f"- torch {meta['torch']}; mlperf_fast commit {meta['mlperf_fast_commit']}; "
              f"{meta['date']}"),
             f"- swapped: {', '.join(data['swapped']) or 'nothing (control run)'}"]
    if meta["missing_paths"]:
        lines.append(f"- not in this checkout: {', '.join(meta['missing_paths'])}")
    if s["reasons"]:
        lines += ["", "| reason | failures |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in s["reasons"].items()]
        lines += ["", "| test (parametrizations) | failed | reason | first error |",
                  "|---|---|---|---|"]
        for (name, reason), (count, msg) in _failures_by_test(data["tests"]).items():
            msg = msg.replace("|", "\\|")
            lines.append(f"| `{name}` | {count} | {reason} | {msg} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--source", help="the peer's source checkout (not needed for lstm)")
    parser.add_argument("--original", action="store_true",
                        help="run the selection without swapping (the control)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that has the peer and mlperf_fast installed")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "mlperf_fast-peers"),
                        help="folder for <peer>-<mode>-<device>.json and .md")
    parser.add_argument("--source-label", help="what the checkout is, recorded in the results "
                        "when it is not a git checkout (a release tag, an archive's name)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.pytest_args = extra
    peer = PEERS[args.peer]
    if peer.needs_source:
        if not args.source or not os.path.isdir(args.source):
            parser.error(f"{args.peer} needs --source, a checkout of its repository "
                         f"(got {args.source!r})")
        args.source = os.path.abspath(args.source)
    versions = _versions(args.python, peer.module, args.source)
    device = args.device
    if device == "auto":
        device = "cuda" if versions.get("cuda") == "True" else "cpu"
    mode = "original" if args.original else "ours"
    cmd, cwd, missing = build_command(peer, args.source, device, args.python, args.pytest_args)
    if len(missing) == len(peer.paths) + (len(peer.cuda_paths) if device == "cuda" else 0):
        print(f"none of {args.peer}'s test files is in {cwd}: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{args.peer}-{mode}-{device}")
    env = dict(os.environ, PEERS_PEER=args.peer, PEERS_MODE=mode, PEERS_REPORT=stem + ".json",
               PEERS_SOURCE=args.source or "", PEERS_DEVICE=device)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    if device == "cpu" and peer.map_cuda:
        env["PEERS_MAP_CUDA"] = "1"
    if device == "cpu":
        env.setdefault("TRITON_INTERPRET", "1")  # our Triton kernels on CPU tensors, as the tests
    print("$ (cd", cwd, "&&", " ".join(cmd) + ")", flush=True)
    rc = subprocess.run(cmd, cwd=cwd, env=env, check=False).returncode
    if not os.path.exists(stem + ".json"):
        print(f"pytest exited {rc} without a report (see its output above)", file=sys.stderr)
        return rc or 1
    with open(stem + ".json") as f:
        data = json.load(f)
    data["meta"] = {
        "peer_version": f"{peer.module} {versions.get('peer')}",
        "source": args.source or "(none: torch's module_db)",
        "source_commit": _describe_source(args.source, args.source_label),
        "torch": versions.get("torch"), "mlperf_fast_commit": _git_rev(REPO) or "unknown",
        "date": datetime.date.today().isoformat(), "missing_paths": missing,
        "command": " ".join(cmd),
    }
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=1)
    md = to_markdown(data)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"written: {stem}.json, {stem}.md")
    return 0 if rc in (0, 1) else rc


if __name__ == "__main__":
    sys.exit(main())
