"""The ops as small modules, for TorchScript and ``torch.export``: which implementation an exported
model runs is fixed by which module it holds, not by a string resolved at run time.

A scripted model contains only the code of the modules it holds, so a model holding the ``Reference*``
modules loads with plain torch, while one holding the ``Compiled*`` modules calls
``torch.ops.e3relax.*`` and needs the op library loaded (``torch.ops.load_library``) before
``torch.jit.load``. None of these modules has weights: swapping them never changes a state dict.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .message_passing import MessageGraph, message_graph_unchecked, vector_message_reference
from .radial_filter import radial_filter_reference
from .radius_graph import SELF_IMAGE_MODES, radius_graph_reference


class ReferenceRadiusGraph(nn.Module):
    """``forward(pos [N,3], cell [B,3,3], pbc [B,3], ptr [B+1]) -> (edge_index [2,E], shifts [E,3])``
    by the pure-PyTorch reference."""

    def __init__(self, cutoff: float, max_neighbors: int, self_images: str):
        super().__init__()
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)
        self.self_images = str(self_images)

    def forward(self, pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
        edge_index, shifts, _ = radius_graph_reference(pos, cell, pbc, ptr, self.cutoff, self.max_neighbors,
                                                       self.self_images)
        return edge_index, shifts


class CompiledRadiusGraph(nn.Module):
    """As :class:`ReferenceRadiusGraph`, through ``torch.ops.e3relax.radius_graph_pbc`` (CPU or CUDA
    kernel by the inputs' device; the kernel validates its inputs)."""

    def __init__(self, cutoff: float, max_neighbors: int, self_images: str):
        super().__init__()
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)
        self.self_image_mode = SELF_IMAGE_MODES.index(self_images)

    def forward(self, pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
        edge_index, shifts, _ = torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, self.cutoff,
                                                                   self.max_neighbors, self.self_image_mode)
        return edge_index, shifts


class NoMessageGraph(nn.Module):
    """The reference aggregation needs no CSR: ``forward(edge_index, num_nodes) -> None``."""

    def forward(self, edge_index: Tensor, num_nodes: int) -> Optional[MessageGraph]:
        return None


class CompiledMessageGraph(nn.Module):
    """``forward(edge_index [2,E], num_nodes) -> MessageGraph``, found once per batch for all layers."""

    def forward(self, edge_index: Tensor, num_nodes: int) -> Optional[MessageGraph]:
        return message_graph_unchecked(edge_index, num_nodes)


class ReferenceVectorMessage(nn.Module):
    """``forward(phi, w, vec, unit, edge_index, csr) -> (dh [N,F], dvec [N,3,F])`` by the reference."""

    def forward(self, phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                csr: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        return vector_message_reference(phi, w, vec, unit, edge_index)


class CompiledVectorMessage(nn.Module):
    """As :class:`ReferenceVectorMessage`, through ``torch.ops.e3relax.vector_message``."""

    def forward(self, phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                csr: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        if csr is None:
            csr = message_graph_unchecked(edge_index, vec.shape[0])
        rowptr, source, target, perm, source_ptr = csr
        dh, dvec = torch.ops.e3relax.vector_message(phi, w, vec, unit, rowptr, source, target, perm, source_ptr)
        return dh, dvec


class ReferenceRadialFilter(nn.Module):
    """``forward(distance [E], weight [O,M], bias [O]) -> [E,O]`` by the reference (materialised basis)."""

    def __init__(self, cutoff: float, envelope_exponent: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_exponent = int(envelope_exponent)

    def forward(self, distance: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return radial_filter_reference(distance, weight, bias, self.cutoff, self.envelope_exponent)


class CompiledRadialFilter(ReferenceRadialFilter):
    """As :class:`ReferenceRadialFilter`, through ``torch.ops.e3relax.radial_filter`` (banded, fused)."""

    def forward(self, distance: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return torch.ops.e3relax.radial_filter(distance, weight, bias, self.cutoff, self.envelope_exponent)
