"""Builds mlperf_fast._C from csrc/.

The C++ sources are always built. The CUDA sources (csrc/**/*_cuda.cu) are added when torch is a
CUDA build and nvcc is found, or when forced:

    MLPERF_FAST_BUILD=auto|cpu|cuda   (default auto)
    TORCH_CUDA_ARCH_LIST              (default: the visible GPUs' archs, as torch chooses them,
                                       with PTX of the newest; with no GPU visible, DEFAULT_ARCHS)
    MAX_JOBS                          (default: every core)
    MLPERF_FAST_DEBUG=1               (-O0 -g, and -G -lineinfo for CUDA)
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Built when no GPU is visible (a build machine, a container image, CI): sm_80 machine code, which
# also runs on sm_86 and sm_89 (A10, L4, L40S, RTX 30xx/40xx), sm_90 for the H100/H200, and PTX of
# sm_90 that the driver compiles for newer GPUs (B200, RTX 50xx). Each arch multiplies the build
# time; set TORCH_CUDA_ARCH_LIST to build machine code for more.
DEFAULT_ARCHS = "8.0;9.0+PTX"


def _find_cuda_home() -> str | None:
    """Where the CUDA toolkit lives, checked by the presence of its headers.

    torch's own search stops at the first `nvcc` on PATH, which may be a wrapper script whose
    directory holds no toolkit (e.g. /usr/local/bin/nvcc): keep looking past it.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def _build_mode() -> str:
    mode = os.environ.get("MLPERF_FAST_BUILD", "auto").lower()
    if mode not in ("auto", "cpu", "cuda"):
        sys.exit(f"MLPERF_FAST_BUILD must be auto, cpu or cuda, not {mode!r}")
    return mode


def _extension():
    mode = _build_mode()
    cuda_home = _find_cuda_home() if mode != "cpu" else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = mode == "cuda" or (mode == "auto" and torch.version.cuda is not None and cuda_home)
    if mode == "cuda" and (torch.version.cuda is None or not cuda_home):
        sys.exit("MLPERF_FAST_BUILD=cuda needs a CUDA build of torch and the CUDA toolkit (nvcc)")

    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    debug = os.environ.get("MLPERF_FAST_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = [*opt, "-fopenmp"]  # the C++ standard is torch's choice (C++20 for torch >= 2.10)
    define = [("WITH_CUDA", None)] if with_cuda else []
    if not with_cuda:
        return CppExtension(
            "mlperf_fast._C", cpp, include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], define_macros=define,
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not (
            torch.cuda.is_available() and torch.cuda.device_count() > 0):
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    # torch adds PTX of the newest visible GPU's arch when it picks the list itself; record
    # whether there is PTX, so that mlperf_fast knows which GPUs _C can run on (build_info).
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if not arch_list or "+PTX" in arch_list.upper():
        define.append(("MLPERF_FAST_PTX", None))
    # No --use_fast_math: kernels that must match torch bit for bit (NMS's IoU against its
    # threshold) need IEEE division; kernels that want the fast forms call the intrinsics.
    nvcc = [*(["-O0", "-G", "-lineinfo"] if debug else ["-O3", "-lineinfo"]),
            "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"]
    return CUDAExtension(
        "mlperf_fast._C", cpp + cu, include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"],
        define_macros=define,
    )


def _pinned_wheel():
    """bdist_wheel whose wheel requires the exact torch it was built against: _C links to that
    torch's C++ ABI, which changes between releases."""
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools < 70
        from wheel.bdist_wheel import bdist_wheel
    import re

    import torch

    class PinnedTorchWheel(bdist_wheel):
        def egg2dist(self, egginfo_path, distinfo_path):
            super().egg2dist(egginfo_path, distinfo_path)
            meta = os.path.join(distinfo_path, "METADATA")
            with open(meta, encoding="utf-8") as f:
                text = f.read()
            pin = f"Requires-Dist: torch=={torch.__version__.split('+')[0]}"
            text = re.sub(r"^Requires-Dist: torch\b[^;\n]*", pin, text, count=1, flags=re.M)
            with open(meta, "w", encoding="utf-8") as f:
                f.write(text)

    return PinnedTorchWheel


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    return {"build_ext": BuildExtension.with_options(use_ninja=True),
            "bdist_wheel": _pinned_wheel()}


setup(
    packages=find_packages(include=["mlperf_fast", "mlperf_fast.*"]) + ["mlperf_fast.kernels"],
    package_dir={"mlperf_fast.kernels": "kernels"},
    ext_modules=[_extension()],
    cmdclass=_cmdclass(),
    zip_safe=False,
)
