"""Explicit backend choice for every fast op: ``auto``, ``torch``, ``cpp``, ``cuda``, ``triton``.

Each op lists its implementations here. ``auto`` takes the first available one for the tensor's device
(compiled kernels before the reference) and logs once which; an explicit request that cannot be met
raises with the reason. ``report()`` feeds ``e3relax info``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

from . import _library

BACKENDS = ("torch", "cpp", "cuda", "triton")
_log = logging.getLogger("e3relax_fast")


@dataclass(frozen=True)
class Availability:
    backend: str
    available: bool
    reason: str  # "" when available


def _triton_reason(op: str) -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'e3relax_fast[triton]')"
    from e3relax_fast import kernels

    if op not in kernels.PROVIDED_OPS:
        return f"no Triton kernel for {op} yet"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA device (Triton runs on the CPU only with TRITON_INTERPRET=1)"
    return ""


def _compiled_reason(op: str, compiled_name: str, dispatch_key: str, device_kernel: str = "") -> str:
    lib = _library.status()
    if not lib.loaded:
        return lib.reason
    if not hasattr(torch.ops.e3relax, compiled_name):
        return f"the op library has no {compiled_name} op yet"
    if dispatch_key == "CUDA":
        if not lib.build_info.get("cuda", False):
            return "op library built without CUDA (CPU torch or no nvcc at build time)"
        if not torch.cuda.is_available():
            return "no CUDA device"
    kernel = device_kernel or compiled_name
    if not _library.has_kernel(kernel, dispatch_key):
        return f"op library has no {dispatch_key} kernel for {kernel}"
    return ""


@dataclass(frozen=True)
class OpBackends:
    """The implementations of one op. ``compiled_name`` is its name under ``torch.ops.e3relax``."""

    name: str
    reference: Callable
    compiled_name: str
    triton_impl: Callable[[], Callable] | None = None
    device_kernel: str = ""  # the op whose per-device kernel decides availability, if not compiled_name

    def availability(self, backend: str) -> Availability:
        if backend == "torch":
            reason = ""
        elif backend == "cpp":
            reason = _compiled_reason(self.name, self.compiled_name, "CPU", self.device_kernel)
        elif backend == "cuda":
            reason = _compiled_reason(self.name, self.compiled_name, "CUDA", self.device_kernel)
        elif backend == "triton":
            reason = _triton_reason(self.name)
        else:
            raise ValueError(f"backend must be one of auto, {', '.join(BACKENDS)}; got {backend!r}")
        return Availability(backend, reason == "", reason)

    def implementation(self, backend: str) -> Callable:
        if backend == "torch":
            return self.reference
        if backend == "triton":
            assert self.triton_impl is not None
            return self.triton_impl()
        return getattr(torch.ops.e3relax, self.compiled_name)


_REGISTRY: dict[str, OpBackends] = {}
_announced: set[tuple[str, str]] = set()


def register(op: OpBackends) -> None:
    _REGISTRY[op.name] = op


def _warn_once_if_library_missing() -> None:
    """The one log line that says the compiled ops are absent and the references take over."""
    lib = _library.status()
    if not lib.loaded and ("*", "library") not in _announced:
        _announced.add(("*", "library"))
        _log.warning("e3relax_fast: compiled ops unavailable (%s); using the PyTorch references",
                     lib.reason)


def _preference(device: torch.device) -> tuple[str, ...]:
    if device.type == "cuda":
        return ("cuda", "triton", "torch")
    return ("cpp", "torch")


def select(op_name: str, device: torch.device, backend: str = "auto") -> tuple[str, Callable]:
    """The backend name and callable that will run ``op_name`` on ``device``."""
    op = _REGISTRY[op_name]
    if backend != "auto":
        avail = op.availability(backend)
        if not avail.available:
            raise RuntimeError(f"backend {backend!r} for {op_name} is unavailable: {avail.reason}")
        if backend in ("cpp", "cuda") and (backend == "cuda") != (device.type == "cuda"):
            raise RuntimeError(f"backend {backend!r} for {op_name} cannot take tensors on {device}")
        return backend, op.implementation(backend)
    _warn_once_if_library_missing()
    skipped = []
    for candidate in _preference(device):
        avail = op.availability(candidate)
        if avail.available:
            key = (op_name, candidate)
            if skipped and key not in _announced:
                _announced.add(key)
                _log.info("%s uses the %s backend on %s (%s)", op_name, candidate, device.type,
                          "; ".join(skipped))
            return candidate, op.implementation(candidate)
        skipped.append(f"{candidate}: {avail.reason}")
    raise AssertionError("the torch reference is always available")


def report() -> dict[str, list[Availability]]:
    """Every registered op with the availability of every backend, for ``e3relax info``."""
    return {name: [op.availability(b) for b in BACKENDS] for name, op in sorted(_REGISTRY.items())}
