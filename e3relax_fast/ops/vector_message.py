"""Scalar-vector message aggregation of one E3Relax (PaiNN-style) message step.

For an edge e = (j -> i) with ``[a, b, c]_e = split3(phi[j] * w[e]) / sqrt(3)``::

    dh[i]   = sum_e c_e
    dvec[i] = (1 / sqrt(F)) sum_e (a_e * vec[j] + unit_e (x) b_e)

The fused kernels compute this without materialising the per-edge ``[E, 3F]`` and ``[E, 3, F]``
message tensors; the reference below does materialise them (``index_select`` + ``index_add_``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn



def vector_message_reference(phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor,
                             edge_index: Tensor) -> Tuple[Tensor, Tensor]:
    """Gather, multiply, scatter-add. TorchScript-compatible.

    Args:
        phi: [N, 3F] projected node scalars.
        w: [E, 3F] projected radial features of each edge.
        vec: [N, 3, F] node vector features.
        unit: [E, 3] edge unit vectors.
        edge_index: [2, E] (source j, target i).

    Returns:
        dh [N, F], dvec [N, 3, F].
    """
    num_nodes, channels = vec.shape[0], vec.shape[2]
    source, target = edge_index[0], edge_index[1]
    message = phi.index_select(0, source) * w * (1.0 / math.sqrt(3.0))
    gate, direction, scalar = torch.split(message, channels, dim=1)
    dh = torch.zeros((num_nodes, channels), dtype=phi.dtype, device=phi.device).index_add_(0, target, scalar)
    vector_message = gate.unsqueeze(1) * vec.index_select(0, source) + unit.unsqueeze(2) * direction.unsqueeze(1)
    dvec = torch.zeros((num_nodes, 3, channels), dtype=vec.dtype, device=vec.device)
    dvec = dvec.index_add_(0, target, vector_message) * (1.0 / math.sqrt(float(channels)))
    return dh, dvec


#: ``(rowptr [N+1], source [E], target [E], perm [E], source_ptr [N+1])``: the target-sorted edge list in
#: CSR form plus its transpose (``perm`` lists edge ids by source, stably; ``source_ptr`` its row pointer).
MessageGraph = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def message_graph_unchecked(edge_index: Tensor, num_nodes: int) -> MessageGraph:
    """:func:`message_graph` without the sortedness check (a data-dependent branch that ``torch.export``
    cannot trace), for edge lists straight from ``radius_graph_pbc``, which are sorted by construction.
    Counts by ``index_add_`` into ``[num_nodes]`` rather than ``bincount``, whose output size depends on
    the data. TorchScript-compatible."""
    source, target = edge_index[0], edge_index[1]
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
    rowptr[1:] = torch.cumsum(torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
                              .index_add_(0, target, torch.ones_like(target)), 0)
    source_ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
    source_ptr[1:] = torch.cumsum(torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
                                  .index_add_(0, source, torch.ones_like(source)), 0)
    perm = torch.argsort(source, stable=True)
    return rowptr, source.contiguous(), target.contiguous(), perm, source_ptr


def message_graph(edge_index: Tensor, num_nodes: int) -> MessageGraph:
    """The CSR form of a target-sorted edge list that the fused kernels walk, found once per batch and
    shared by all layers. Raises ``ValueError`` if ``edge_index`` is not sorted by target."""
    check_sorted_by_target(edge_index)
    return message_graph_unchecked(edge_index, num_nodes)


def check_sorted_by_target(edge_index: Tensor) -> None:
    """Raise ``ValueError`` unless ``edge_index [2, E]`` is sorted by target, as the fused kernels need."""
    target = edge_index[1]
    if target.numel() > 1 and bool((target[1:] < target[:-1]).any()):
        raise ValueError("vector_message: edge_index must be sorted by target (as radius_graph returns it)")


def register_fake_kernels() -> None:
    """Output shapes of the vector_message kernels for FakeTensor tracing (torch.compile, export)."""
    if getattr(register_fake_kernels, "done", False) or not hasattr(torch.ops.e3relax, "vector_message_forward"):
        return

    @torch.library.register_fake("e3relax::vector_message_forward")
    def _(phi, w, vec, unit, rowptr, source, target, perm, source_ptr):
        return vec.new_empty((vec.shape[0], vec.shape[2])), torch.empty_like(vec)

    @torch.library.register_fake("e3relax::vector_message_backward")
    def _(grad_dh, grad_dvec, phi, w, vec, unit, rowptr, source, target, perm, source_ptr):
        return torch.empty_like(phi), torch.empty_like(w), torch.empty_like(vec), torch.empty_like(unit)

    register_fake_kernels.done = True  # type: ignore[attr-defined]


class ReferenceVectorMessage(nn.Module):
    """``forward(phi, w, vec, unit, edge_index, message_graph) -> (dh [N,F], dvec [N,3,F])`` by
    :func:`vector_message_reference`, which needs no CSR form and ignores ``message_graph``."""

    needs_message_graph = False  # whether forward walks the CSR form (the model finds it once per batch)

    def forward(self, phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                message_graph: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        return vector_message_reference(phi, w, vec, unit, edge_index)


class CompiledVectorMessage(nn.Module):
    """As :class:`ReferenceVectorMessage`, by ``torch.ops.e3relax.vector_message`` (CPU or CUDA kernel by
    the inputs' device, C++ autograd). ``message_graph``: :func:`message_graph` of ``edge_index``, found once per
    batch by the model; found here when absent."""

    needs_message_graph = True  # whether forward walks the CSR form (the model finds it once per batch)

    def forward(self, phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                message_graph: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        if message_graph is None:
            message_graph = message_graph_unchecked(edge_index, vec.shape[0])
        rowptr, source, target, perm, source_ptr = message_graph
        dh, dvec = torch.ops.e3relax.vector_message(phi, w, vec, unit, rowptr, source, target, perm, source_ptr)
        return dh, dvec


class TritonVectorMessage(CompiledVectorMessage):
    """As :class:`CompiledVectorMessage`, by the Triton op ``torch.ops.e3relax.vector_message_triton``
    (registered by ``e3relax_fast/ops/vector_message_triton.py``, imported here: it needs Triton)."""

    def __init__(self):
        super().__init__()
        from . import vector_message_triton  # noqa: F401  (registers the op)

    def forward(self, phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                message_graph: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        if message_graph is None:
            message_graph = message_graph_unchecked(edge_index, vec.shape[0])
        rowptr, source, target, perm, source_ptr = message_graph
        dh, dvec = torch.ops.e3relax.vector_message_triton(phi, w, vec, unit, rowptr, source, target, perm,
                                                           source_ptr)
        return dh, dvec
