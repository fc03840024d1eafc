"""What a bug report needs: ``python -m mlperf_fast.info``."""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import subprocess
import sys


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _driver() -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "n/a"
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else "n/a"
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def collect() -> dict[str, str]:
    """Versions and hardware, as a flat dict of strings."""
    import torch

    from mlperf_fast import __version__
    from mlperf_fast.ops._library import build_info

    info = {
        "mlperf_fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu cores": str(__import__("os").cpu_count()),
        "torch": torch.__version__,
        "torch CUDA": str(torch.version.cuda),
        "cuDNN": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "n/a",
        "triton": _version("triton"),
        "DALI": next((v for v in (_version(d) for d in ("nvidia-dali-cuda130", "nvidia-dali-cuda120"))
                      if v != "not installed"), "not installed"),
        "mlperf-logging": _version("mlperf-logging"),
        "numpy": _version("numpy"),
    }
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cap = torch.cuda.get_device_capability(0)
        info["GPU"] = f"{len(names)}x {names[0]} (sm_{cap[0]}{cap[1]})"
        info["GPU memory"] = f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB"
        info["driver"] = _driver()
    else:
        info["GPU"] = "none"
    built = build_info()
    info["_C backends"] = built.get("backends", "none")
    if "cuda" in built:
        info["_C CUDA"] = f"{built['cuda']} for {built.get('arch', '?')}"
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device=None) -> dict:
    """What a run's report records of the machine: CPU model, cores, GPU and the load average
    at the start (a loaded machine explains a slow run)."""
    import os

    import torch

    info = {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        index = device.index if device is not None and device.type == "cuda" and \
            device.index is not None else 0
        info["gpu"] = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(index)}"
    else:
        info["gpu"] = "none"
    return info


def main() -> None:
    info = collect()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
