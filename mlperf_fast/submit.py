"""``python -m mlperf_fast.submit RUNS_DIR [RUNS_DIR ...] --system NAME --out FOLDER``: the runs
of one or more ``mlperf_fast.train`` outputs as an MLCommons training submission package, checked.

The package is the layout mlperf-logging's package checker reads::

    FOLDER/results/<system>/<benchmark>/result_<i>.txt   each run's mlperf.log
    FOLDER/systems/<system>.json                         the system description
    FOLDER/benchmarks/<benchmark>/README.md               where the code is

The system description is filled from what the runs' reports recorded of the machine (processor,
cores, accelerators, software); the fields no program can know (interconnects, cooling, storage)
are left empty for the submitter to complete: the checker requires them to exist, not to be
filled. Then the package checker runs (with it, for closed results, the seed and RCP checkers),
and its verdict and log are written beside the package (``FOLDER/package_check.log``,
``FOLDER/package_check.json``) and printed. Exit code 0 when the checker passed, 1 when it found
errors, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import shutil
import sys
from typing import Any

from mlperf_fast.harness.compliance import RULESET

EXIT_USAGE = 2
STATUS_NAMES = {"onprem": "Available on-premise", "cloud": "Available cloud",
                "research": "Research, Development, or Internal (RDI)", "preview": "Preview"}
# fields the system checker requires that a program cannot know: left for the submitter
_BLANK = ("host_processor_frequency", "host_processor_caches", "host_processor_interconnect",
          "host_memory_capacity", "host_storage_type", "host_storage_capacity", "host_networking",
          "host_networking_topology", "host_memory_configuration", "accelerator_host_interconnect",
          "accelerator_frequency", "accelerator_on-chip_memories",
          "accelerator_memory_configuration", "accelerator_memory_capacity",
          "accelerator_interconnect", "accelerator_interconnect_topology", "cooling", "hw_notes",
          "sw_notes")


class SubmitError(Exception):
    pass


def _runs(folder: str) -> list[tuple[str, dict[str, Any]]]:
    runs = []
    for d in sorted(glob.glob(os.path.join(folder, "run_*")),
                    key=lambda p: int(p.rsplit("_", 1)[-1]) if p.rsplit("_", 1)[-1].isdigit()
                    else 1 << 30):
        report, log = os.path.join(d, "report.json"), os.path.join(d, "mlperf.log")
        if not os.path.exists(report) or not os.path.exists(log):
            raise SubmitError(f"{d} is not a finished run (report.json and mlperf.log needed)")
        try:
            with open(report) as f:
                data = json.load(f)
        except ValueError as e:
            raise SubmitError(f"{report} is not a run report ({e})") from None
        runs.append((log, data))
    if not runs:
        raise SubmitError(f"{folder} holds no runs (run_0, ...): name a mlperf_fast.train --output")
    return runs


def _system_description(name: str, submitter: str, division: str, status: str,
                        report: dict[str, Any]) -> dict[str, Any]:
    machine, env = report.get("machine", {}), report.get("environment", {})
    gpu = machine.get("gpu", "none")
    count, _, model = gpu.partition("x ") if "x " in gpu else ("0", "", "")
    desc = {
        "submitter": submitter, "division": division, "status": STATUS_NAMES[status],
        "system_name": name, "number_of_nodes": "1", "host_processors_per_node": "1",
        "host_processor_model_name": machine.get("cpu", ""),
        "host_processor_core_count": str(machine.get("cores", "")),
        "host_processor_vcpu_count": str(machine.get("cores", "")),
        "accelerators_per_node": count.strip(), "accelerator_model_name": model.strip(),
        "framework": f"PyTorch {env.get('torch', '')}, mlperf_fast {env.get('mlperf_fast', '')}",
        "other_software_stack": f"CUDA {env.get('torch CUDA', '')}, cuDNN {env.get('cuDNN', '')}, "
                                f"Triton {env.get('triton', '')}, DALI {env.get('DALI', '')}",
        "operating_system": env.get("platform", platform.platform()),
    }
    desc.update({k: "" for k in _BLANK})
    return desc


def export(run_dirs: list[str], system: str, out: str, submitter: str, status: str,
           rcp_bypass: bool = False) -> dict[str, Any]:
    """Write the package; returns {benchmark: [result files]}."""
    by_benchmark: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for folder in run_dirs:
        for log, report in _runs(folder):
            by_benchmark.setdefault(report["benchmark"], []).append((log, report))
    divisions = {r["division"] for runs in by_benchmark.values() for _, r in runs}
    if len(divisions) != 1:
        raise SubmitError(f"the runs mix divisions {sorted(divisions)}: one system is one division")
    division = divisions.pop()
    if os.path.exists(out) and os.listdir(out):
        raise SubmitError(f"--out {out} is not empty")
    written: dict[str, Any] = {}
    first_report = None
    for benchmark, runs in sorted(by_benchmark.items()):
        folder = os.path.join(out, "results", system, benchmark)
        os.makedirs(folder, exist_ok=True)
        files = []
        for i, (log, report) in enumerate(runs):
            dst = os.path.join(folder, f"result_{i}.txt")
            shutil.copyfile(log, dst)
            files.append(dst)
            first_report = first_report or report
        if rcp_bypass:
            with open(os.path.join(folder, "package_checker_params"), "w") as f:
                f.write("rcp-bypass")
        code = os.path.join(out, "benchmarks", benchmark)
        os.makedirs(code, exist_ok=True)
        with open(os.path.join(code, "README.md"), "w") as f:
            f.write(f"# {benchmark}\n\nTrained with mlperf_fast (`python -m mlperf_fast.train "
                    f"{benchmark}`), package mlperf_fast/workloads/{benchmark}/.\n")
        written[benchmark] = files
    os.makedirs(os.path.join(out, "systems"), exist_ok=True)
    with open(os.path.join(out, "systems", f"{system}.json"), "w") as f:
        json.dump(_system_description(system, submitter, division, status, first_report), f,
                  indent=2)
    return written


def check(out: str, ruleset: str = RULESET) -> dict[str, Any]:
    """mlperf-logging's package checker over ``out``; its verdict and log."""
    from mlperf_logging.package_checker import package_checker

    log_path = os.path.join(out, "package_check.log")
    handler = logging.FileHandler(log_path, mode="w")
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        package_checker.check_training_package(
            out, "training", ruleset, quiet=True, werror=False, rcp_bypass=False,
            rcp_bert_train_samples=False, seed_checker_bypass=False, log_output=log_path)
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
    with open(log_path) as f:
        text = f.read()
    passed = "PACKAGE CHECKER FOUND NO ERRORS" in text
    errors = [line.strip() for line in text.splitlines()
              if line.startswith("ERROR") or " ERROR " in line or "Failed" in line][:40]
    verdict = {"passed": passed, "ruleset": f"training {ruleset}", "errors": errors,
               "log": log_path}
    with open(os.path.join(out, "package_check.json"), "w") as f:
        json.dump(verdict, f, indent=2)
    return verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlperf_fast.submit", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("runs", nargs="+", help="output folders of python -m mlperf_fast.train")
    p.add_argument("--system", required=True, help="the system's name (systems/<NAME>.json)")
    p.add_argument("--out", required=True, help="the package folder to write (new or empty)")
    p.add_argument("--submitter", default="mlperf_fast", help="the submitting organization")
    p.add_argument("--status", choices=sorted(STATUS_NAMES), default="research")
    p.add_argument("--rcp-bypass", action="store_true", help="write package_checker_params "
                   "asking the checker to accept failed RCP checks (a justified exception only)")
    p.add_argument("--no-check", action="store_true", help="write the package only")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else 0
    try:
        written = export(args.runs, args.system, args.out, args.submitter, args.status,
                         args.rcp_bypass)
    except (SubmitError, OSError) as e:
        print(f"mlperf_fast.submit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for benchmark, files in written.items():
        print(f"{benchmark}: {len(files)} result files in "
              f"{os.path.dirname(files[0]) if files else '-'}")
    if args.no_check:
        return 0
    verdict = check(args.out)
    print(f"package checker ({verdict['ruleset']}): {'passed' if verdict['passed'] else 'FAILED'}"
          f"; log in {verdict['log']}")
    for line in verdict["errors"]:
        print(f"  {line}")
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
