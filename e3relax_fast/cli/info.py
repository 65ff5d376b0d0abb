"""``e3relax info``: versions, the op library, and every backend of every op with why it is unavailable."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform

HELP = "show versions, compiled-op status and available backends"
_PACKAGES = ("torch", "numpy", "ase", "pymatgen", "spglib", "triton", "cupy-cuda13x", "vesin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("paper", "small"), help="also print this model's parameter count")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _bfloat16_support(torch) -> str:
    """Whether bfloat16 matrix products have hardware here: they are only worth it where they do."""
    if torch.cuda.is_available():
        return "CUDA device (tensor cores)"
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX tiles on this CPU (fast)"
    if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16 on this CPU (faster than float32)"
    return "no bfloat16 hardware found: emulated, slower than float32 here"


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__, ops

    print(f"e3relax_fast {__version__}  (python {platform.python_version()}, {platform.machine()})")
    for package in _PACKAGES:
        print(f"  {package:<14} {_version(package)}")
    print(f"  torch threads  {torch.get_num_threads()}  cuda available: {torch.cuda.is_available()}")
    lib = ops.library_status()
    if lib.loaded:
        print(f"op library: loaded from {lib.path}  {lib.build_info}")
    else:
        print(f"op library: not loaded: {lib.reason}")
    from ..ops.neighbors import compiled_binding

    print("numpy binding (e3relax_fast.neighbors): " + ("compiled, GIL released" if compiled_binding() is not None
                                                        else "not built: the PyTorch reference answers"))
    order = "; ".join(f"{'/'.join(names)} on {kind}" for kind, names in ops.registry.PREFERENCE.items())
    print(f"backends (e3relax_fast/ops/registry.py; auto takes the first available of {order}):")
    for op_name, entries in ops.backend_report().items():
        print(f"  {op_name}")
        for entry in entries:
            state = "available" if entry.available else f"unavailable: {entry.reason}"
            print(f"    {entry.backend:<7} {state}")
    from ..model.pretrained import DEFAULT_MODEL, PRETRAINED_DIR, pretrained_names

    shipped = pretrained_names()
    print("shipped models: " + (", ".join(f"{n}{' (default)' if n == DEFAULT_MODEL else ''}" for n in shipped)
                                if shipped else f"none found in {PRETRAINED_DIR} (broken install?)"))
    print("export formats: torchscript (.ts.pt), aoti (.pt2; needs a C++ compiler to export)")
    print("bfloat16 products (--matmul-precision bfloat16): " + _bfloat16_support(torch))
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("TRITON_INTERPRET=1: Triton kernels run in the (slow) CPU interpreter")
    if args.model:
        from ..model import E3Relax, E3RelaxConfig

        config = E3RelaxConfig.preset(args.model)
        with torch.device("meta"):
            model = E3Relax(config)
        print(f"model {args.model!r}: {model.num_parameters():,} parameters  {config.to_dict()}")
    return 0
