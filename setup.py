"""Builds the optional op library ``e3relax_fast._C`` from ``csrc/``; all metadata is in pyproject.toml.

E3RELAX_BUILD selects what is compiled:
  auto  (default) C++/OpenMP always; CUDA too when torch is a CUDA build and nvcc is found.
        A failed build is reported and skipped: the package then runs on its PyTorch references.
  cpu   C++/OpenMP only; a failure fails the install.
  cuda  C++ and CUDA; a failure (or no CUDA toolchain) fails the install.
  none  nothing is compiled.

The library is loaded with ``torch.ops.load_library`` (it registers ``torch.ops.e3relax.*`` and holds no
Python module init), so one ``.so`` serves Python, TorchScript in C++ and AOTInductor.
Build it against the torch that is installed: ``pip install --no-build-isolation .``
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
MODES = ("auto", "cpu", "cuda", "none")


def _mode() -> str:
    mode = os.environ.get("E3RELAX_BUILD", "auto").strip().lower()
    if mode not in MODES:
        sys.exit(f"E3RELAX_BUILD={mode!r} is not one of {', '.join(MODES)}")
    return mode


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def _cuda_toolchain() -> str | None:
    """Why CUDA cannot be built, or None when it can."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not (os.environ.get("CUDA_HOME") or shutil.which("nvcc")):
        return "no nvcc on PATH and CUDA_HOME unset"
    return None


def _extensions(mode: str):
    if mode == "none":
        print("e3relax_fast: E3RELAX_BUILD=none, skipping the op library", file=sys.stderr)
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpp_sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    why_no_cuda = _cuda_toolchain()
    use_cuda = mode == "cuda" or (mode == "auto" and why_no_cuda is None and bool(cuda_sources))
    if mode == "cuda" and why_no_cuda is not None:
        sys.exit(f"E3RELAX_BUILD=cuda but {why_no_cuda}")

    build_info = f'-DE3RELAX_TORCH_VERSION="{torch.__version__}"'
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20", build_info]
    kwargs = dict(
        include_dirs=[os.path.join(ROOT, "csrc", "include")],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    if use_cuda:
        ext = CUDAExtension(
            "e3relax_fast._C",
            cpp_sources + cuda_sources,
            extra_compile_args={
                "cxx": cxx_flags + ["-DE3RELAX_WITH_CUDA"],
                "nvcc": ["-O3", "-std=c++17", "-fmad=false", "-DE3RELAX_WITH_CUDA"],  # no FMA contraction or fast math: the CPU's numbers
            },
            **kwargs,
        )
    else:
        ext = CppExtension("e3relax_fast._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    # The numpy-facing radius graph: pybind11 needs the full Python API, so it is its own module.
    neighbors_ext = CppExtension(
        "e3relax_fast._neighbors", _sources("csrc/python/*.cpp"), extra_compile_args={"cxx": cxx_flags},
        include_dirs=kwargs["include_dirs"],
    )

    # The tests' own op library (csrc/testing/): a CPU harness of the CUDA radius-graph code. Production
    # never loads it (e3relax_fast/testing.py does); its schema is its own, outside csrc/ops.cpp.
    testing_ext = CppExtension("e3relax_fast._testing_ops", _sources("csrc/testing/*.cpp"),
                               extra_compile_args={"cxx": cxx_flags}, **kwargs)

    class OptionalBuildExtension(BuildExtension):
        """In auto mode a compiler failure leaves a working pure-PyTorch package instead of no package."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001 - any build failure degrades to the references
                if mode != "auto":
                    raise
                print(f"e3relax_fast: op library build failed ({err}); using PyTorch references",
                      file=sys.stderr)

    build_ext = OptionalBuildExtension.with_options(no_python_abi_suffix=False)
    return [ext, neighbors_ext, testing_ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions(_mode())
# No abi3 wheel tag: the op library uses the limited API, but the pybind11 module cannot.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
