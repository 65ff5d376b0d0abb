"""Differentiable edge geometry from positions, cell and the fixed topology (edges, integer shifts)."""

from __future__ import annotations

import torch
from torch import Tensor


def atom_structure_index(ptr: Tensor, num_atoms: int) -> Tensor:
    """[N] long: the structure each atom belongs to, from ``ptr [B+1]``."""
    sizes = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(sizes.numel(), device=ptr.device), sizes,
                                   output_size=num_atoms)


def edge_vectors(pos: Tensor, cell: Tensor, edge_index: Tensor, shifts: Tensor, edge_structure: Tensor) -> Tensor:
    """``r_ij = pos[j] + shifts @ cell[structure] - pos[i]`` (Å), differentiable in ``pos`` and ``cell``.

    Args:
        pos: [N, 3]; cell: [B, 3, 3] (rows are lattice vectors); edge_index: [2, E] (source j, target i);
        shifts: [E, 3] integer offsets; edge_structure: [E] structure of each edge.

    Returns:
        [E, 3] edge vectors pointing from the target i to the source image j.
    """
    offsets = torch.bmm(shifts.to(pos.dtype).unsqueeze(1), cell.index_select(0, edge_structure)).squeeze(1)
    return pos.index_select(0, edge_index[0]) + offsets - pos.index_select(0, edge_index[1])
