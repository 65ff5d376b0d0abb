"""The one table of op implementations, and the one function that chooses among them.

Every op has a pure-PyTorch reference and may have compiled kernels (``cpp``, ``cuda``: the op library
built from ``csrc/``) and Triton kernels (``triton``: ``e3relax_fast/kernels/``). Each implementation is
an ``nn.Module`` without weights whose ``forward`` has the signature of the op's reference (its static
settings, such as the cutoff, are constructor arguments). :func:`build` picks one when a model block is
built, for a backend request and a device type, and the block holds that module: the same module then
runs in eager mode, under TorchScript and under ``torch.export`` (nothing is dispatched at run time).

``backend="auto"`` takes the first available implementation in :data:`PREFERENCE` for the device (the
compiled kernels before the reference) and logs once when it had to pass over one. An explicit
backend that the op has no implementation for at all takes ``auto`` (the radius graph has no Triton
kernel, for instance, so a model asked for ``triton`` builds its graph with the fastest other kernel);
one that the op has but cannot run here raises with the reason. :func:`report` feeds ``e3relax info``.

To add a backend for an op: write the kernel, register it (``csrc/ops.cpp`` for the op library, or a
``torch.library`` op for Triton), write its module beside the op's reference, and add one line to
:data:`IMPLEMENTATIONS` (docs/backends.md).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _library
from .vector_message import CompiledVectorMessage, ReferenceVectorMessage, TritonVectorMessage
from .radial_filter import CompiledRadialFilter, ReferenceRadialFilter
from .radial_vector_message import CompiledRadialVectorMessage, ReferenceRadialVectorMessage
from .radius_graph import CompiledRadiusGraph, ReferenceRadiusGraph

BACKENDS = ("torch", "cpp", "cuda", "triton")
#: The order in which ``auto`` tries backends, per device type.
PREFERENCE = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}
_log = logging.getLogger("e3relax_fast")


@dataclass(frozen=True)
class Availability:
    backend: str
    available: bool
    reason: str  # "" when available


@dataclass(frozen=True)
class Implementation:
    """One implementation of one op: the module that runs it, the device types it takes, and (for the op
    library) the ``torch.ops.e3relax`` op whose per-device kernel must exist."""

    op: str
    backend: str
    module: type[nn.Module]
    devices: tuple[str, ...]
    library_op: str = ""

    def unavailable_reason(self) -> str:
        """Why this implementation cannot run here ("" when it can)."""
        if self.backend == "torch":
            return ""
        if self.backend == "triton":
            return _triton_reason()
        return _library_reason(self.library_op, "CUDA" if self.backend == "cuda" else "CPU")


#: Every implementation of every op, one line each.
IMPLEMENTATIONS = (
    Implementation("radius_graph", "torch", ReferenceRadiusGraph, ("cpu", "cuda")),
    Implementation("radius_graph", "cpp", CompiledRadiusGraph, ("cpu",), "radius_graph_pbc"),
    Implementation("radius_graph", "cuda", CompiledRadiusGraph, ("cuda",), "radius_graph_pbc"),
    Implementation("vector_message", "torch", ReferenceVectorMessage, ("cpu", "cuda")),
    Implementation("vector_message", "cpp", CompiledVectorMessage, ("cpu",), "vector_message_forward"),
    Implementation("vector_message", "cuda", CompiledVectorMessage, ("cuda",), "vector_message_forward"),
    Implementation("vector_message", "triton", TritonVectorMessage, ("cuda", "cpu")),
    Implementation("radial_filter", "torch", ReferenceRadialFilter, ("cpu", "cuda")),
    Implementation("radial_filter", "cpp", CompiledRadialFilter, ("cpu",), "radial_filter_forward"),
    Implementation("radial_vector_message", "torch", ReferenceRadialVectorMessage, ("cpu", "cuda")),
    Implementation("radial_vector_message", "cpp", CompiledRadialVectorMessage, ("cpu",), "radial_vector_message"),
)
OPS = tuple(dict.fromkeys(entry.op for entry in IMPLEMENTATIONS))


def _triton_reason() -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'e3relax_fast[triton]')"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA device (Triton runs on the CPU only with TRITON_INTERPRET=1)"
    return ""


def _library_reason(library_op: str, dispatch_key: str) -> str:
    lib = _library.status()
    if not lib.loaded:
        return lib.reason
    if not hasattr(torch.ops.e3relax, library_op):
        return f"the op library has no {library_op} op yet"
    if dispatch_key == "CUDA":
        if not lib.build_info.get("cuda", False):
            return "op library built without CUDA (CPU torch or no nvcc at build time)"
        if not torch.cuda.is_available():
            return "no CUDA device"
    if not _library.has_kernel(library_op, dispatch_key):
        return f"op library has no {dispatch_key} kernel for {library_op}"
    return ""


def _implementation(op: str, backend: str) -> Implementation | None:
    return next((entry for entry in IMPLEMENTATIONS if entry.op == op and entry.backend == backend), None)


def _device_type(device: str | torch.device | None) -> str:
    kind = torch.device(device if device is not None else "cpu").type
    if kind not in PREFERENCE:
        raise ValueError(f"ops run on cpu or cuda devices, not {kind!r}")
    return kind


def _announce_once(key: tuple[str, ...], message: str, *args: Any, level: int = logging.INFO) -> None:
    if key not in _announced:
        _announced.add(key)
        _log.log(level, message, *args)


_announced: set[tuple[str, ...]] = set()


def choose(op: str, backend: str = "auto", device: str | torch.device | None = None) -> Implementation:
    """The implementation of ``op`` that a ``backend`` request gets on ``device`` (default: the CPU).
    Raises ``RuntimeError`` naming the reason when an explicit request cannot be met."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; the ops are {', '.join(OPS)}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be one of auto, {', '.join(BACKENDS)}; got {backend!r}")
    kind = _device_type(device)
    entry = _implementation(op, backend) if backend != "auto" else None
    if entry is not None:
        reason = entry.unavailable_reason()
        if reason:
            raise RuntimeError(f"backend {backend!r} for {op} is unavailable: {reason}")
        if kind not in entry.devices:
            raise RuntimeError(f"backend {backend!r} for {op} cannot take tensors on {kind}")
        return entry
    if not _library.status().loaded:
        _announce_once(("library",), "e3relax_fast: compiled ops unavailable (%s); using the PyTorch references",
                       _library.status().reason, level=logging.WARNING)
    skipped = []
    for candidate in PREFERENCE[kind]:
        entry = _implementation(op, candidate)
        if entry is None:
            continue
        reason = entry.unavailable_reason()
        if not reason:
            if skipped:
                _announce_once((op, candidate, kind), "%s uses the %s backend on %s (%s)", op, candidate, kind,
                               "; ".join(skipped))
            return entry
        skipped.append(f"{candidate}: {reason}")
    raise AssertionError("the torch reference is always available")


def build(op: str, backend: str = "auto", device: str | torch.device | None = None, **settings: Any) -> nn.Module:
    """A new module running ``op`` by the implementation :func:`choose` picks; ``settings`` are the op's
    static arguments (for instance ``cutoff``)."""
    return choose(op, backend, device).module(**settings)


@functools.lru_cache(maxsize=256)
def cached(op: str, backend: str, device_type: str, settings: tuple[tuple[str, Any], ...]) -> nn.Module:
    """:func:`build` once per request, for the functional forms (``ops.radius_graph(...)`` and the rest),
    which would otherwise build a module at every call."""
    return build(op, backend, device_type, **dict(settings))


def report() -> dict[str, list[Availability]]:
    """Every op with the availability of every backend (no implementation: unavailable), for ``e3relax info``."""
    out: dict[str, list[Availability]] = {}
    for op in sorted(OPS):
        entries = []
        for backend in BACKENDS:
            entry = _implementation(op, backend)
            reason = entry.unavailable_reason() if entry is not None else f"no {backend} kernel for {op} yet"
            entries.append(Availability(backend, reason == "", reason))
        out[op] = entries
    return out
