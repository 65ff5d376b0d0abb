"""The ops as functions, for code outside a model (tests, benchmarks, the numpy binding's fallback).

Each takes the reference's arguments plus ``backend`` (``"auto"``, ``"torch"``, ``"cpp"``, ``"cuda"``,
``"triton"``) and runs the module :func:`registry.build` would give a model block for that request on
the inputs' device (built once per request and cached). Inputs are validated first where the
reference itself would not say what is wrong. Model blocks hold their modules instead
(``e3relax_fast/nn/blocks.py``), so nothing here runs inside a scripted or exported model.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import registry
from .checks import check_batch
from . import vector_message as vector_message_module  # its name is taken here by the functional form
from .vector_message import MessageGraph
from .radius_graph import check_pair_budget


def _module(op: str, backend: str, device: torch.device, **settings) -> torch.nn.Module:
    return registry.cached(op, backend, device.type, tuple(sorted(settings.items())))


def radius_graph(pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor, cutoff: float, max_neighbors: int = 0,
                 self_images: str = "all", backend: str = "auto") -> Tuple[Tensor, Tensor, Tensor]:
    """Periodic radius graph of a flat batch; shapes and conventions as
    :func:`~e3relax_fast.ops.radius_graph.radius_graph_reference`. Inputs are validated first
    (``ValueError`` naming the structure and field), and the expected pair count bounded."""
    check_batch(pos, cell, pbc, ptr, allow_empty=True)
    check_pair_budget(pos, cell, pbc, ptr, cutoff)
    graph = _module("radius_graph", backend, pos.device, cutoff=cutoff, max_neighbors=max_neighbors,
                    self_images=self_images)
    return graph(pos, cell, pbc, ptr)


def vector_message(phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor, backend: str = "auto",
                   message_graph: Optional[MessageGraph] = None) -> Tuple[Tensor, Tensor]:
    """Message aggregation; shapes as :func:`~e3relax_fast.ops.vector_message.vector_message_reference`.

    ``edge_index`` must be sorted by target (as :func:`radius_graph` returns it; checked). ``message_graph`` may
    carry :func:`~e3relax_fast.ops.vector_message.message_graph` of it, found once and reused; the reference ignores it. The fused
    backends differentiate: ``cpp``/``cuda`` through C++ autograd, ``triton`` through ``torch.library``.
    """
    module = _module("vector_message", backend, phi.device)
    if message_graph is None and module.needs_message_graph:
        message_graph = vector_message_module.message_graph(edge_index, vec.shape[0])
    return module(phi, w, vec, unit, edge_index, message_graph)


def radial_filter(distance: Tensor, weight: Tensor, bias: Tensor, cutoff: float, envelope_exponent: int = 5,
                  backend: str = "auto") -> Tensor:
    """``bias + W phi(d)``; shapes as :func:`~e3relax_fast.ops.radial_filter.radial_filter_reference`
    (a CPU kernel only: on CUDA ``auto`` takes the reference)."""
    module = _module("radial_filter", backend, distance.device, cutoff=cutoff, envelope_exponent=envelope_exponent)
    return module(distance, weight, bias)


def radial_vector_message(phi: Tensor, distance: Tensor, weight: Tensor, bias: Tensor, cutoff: float,
                          envelope_exponent: int, vec: Tensor, unit: Tensor, edge_index: Tensor,
                          backend: str = "auto", message_graph: Optional[MessageGraph] = None) -> Tuple[Tensor, Tensor]:
    """``vector_message(phi, radial_filter(distance, weight, bias, ...), vec, unit, edge_index)`` without
    storing the filter; shapes as :func:`~e3relax_fast.ops.radial_vector_message.radial_vector_message_reference`.
    Inference only: the kernel raises ``ValueError`` when an input requires grad under autograd."""
    module = _module("radial_vector_message", backend, phi.device, cutoff=cutoff, envelope_exponent=envelope_exponent)
    if message_graph is None and module.needs_message_graph:
        message_graph = vector_message_module.message_graph(edge_index, vec.shape[0])
    return module(phi, distance, weight, bias, vec, unit, edge_index, message_graph)
