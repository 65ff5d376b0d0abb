"""The CUDA sources compile on machines without a GPU: kernels with nvcc, the torch bindings with the
host compiler against the installed torch headers. Running them needs a GPU (tests marked cuda)."""

import glob
import os
import shutil
import subprocess
import sysconfig

import pytest
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CUDA_DIR = os.path.join(ROOT, "csrc", "cuda")
NVCC = shutil.which("nvcc")


def cuda_include() -> str | None:
    for base in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", os.path.dirname(os.path.dirname(NVCC or "")) or None):
        if base and os.path.exists(os.path.join(base, "include", "cuda_runtime.h")):
            return os.path.join(base, "include")
    return None


@pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("source", sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu"))), ids=os.path.basename)
def test_kernels_compile_with_nvcc(source, tmp_path):
    result = subprocess.run([NVCC, "-c", "-std=c++17", "-fmad=false", "-I", os.path.join(ROOT, "csrc", "include"), source,
                             "-o", str(tmp_path / "kernel.o")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NVCC is None or cuda_include() is None, reason="no CUDA toolkit headers on this machine")
@pytest.mark.parametrize("source", sorted(glob.glob(os.path.join(CUDA_DIR, "*.cpp"))), ids=os.path.basename)
def test_bindings_compile_against_torch_headers(source, tmp_path):
    torch_include = os.path.join(os.path.dirname(torch.__file__), "include")
    # A CPU wheel of torch ships the c10/cuda headers but not the one CMake generates for CUDA builds.
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    compiler = os.environ.get("CXX") or sysconfig.get_config_var("CXX").split()[0] or "c++"
    result = subprocess.run([compiler, "-fsyntax-only", "-std=c++20", "-I", str(tmp_path / "stub"),
                             "-I", os.path.join(ROOT, "csrc", "include"), "-I", torch_include,
                             "-I", os.path.join(torch_include, "torch", "csrc", "api", "include"),
                             "-I", cuda_include(), source], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
