"""The one batch type and the one batch packer of the package: training, evaluation and prediction cut
their structures into batches with :func:`pack_greedy` and hold each as a :class:`CrystalBatch`.

A flat batch holds ``pos [N, 3]`` (Å, Cartesian), ``z [N]`` (atomic numbers), ``cell [B, 3, 3]`` (Å,
lattice vectors as rows), ``pbc [B, 3]`` and ``ptr [B + 1]`` (atoms of structure b are
``ptr[b]:ptr[b+1]``); where the graph was built beforehand, ``edge_index [2, E]`` (source j, target i,
flat atom indices, sorted by target) and integer ``shifts [E, 3]``; for stored pairs, the relaxed
``target_pos [N, 3]`` and ``target_cell [B, 3, 3]`` and the store ``indices [B]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass
class CrystalBatch:
    """A flat batch of crystals (see the module docstring); ``ids`` names each structure in errors and
    reports. The graph and the targets are None where a batch has none."""

    pos: Tensor
    z: Tensor
    cell: Tensor
    pbc: Tensor
    ptr: Tensor
    ids: list[str] = field(default_factory=list)
    edge_index: Optional[Tensor] = None
    shifts: Optional[Tensor] = None
    target_pos: Optional[Tensor] = None
    target_cell: Optional[Tensor] = None
    indices: Optional[Tensor] = None

    @property
    def num_structures(self) -> int:
        return self.ptr.numel() - 1

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CrystalBatch":
        """Floating tensors to ``device`` and ``dtype``, integer ones to ``device``; ``indices`` stay."""
        def moved(t: Optional[Tensor]) -> Optional[Tensor]:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        changed = {f.name: moved(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if f.name not in ("ids", "indices")}
        return dataclasses.replace(self, **changed, ids=list(self.ids))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(pos, z, cell, pbc, ptr)``, the first positional arguments of ``E3Relax``."""
        return self.pos, self.z, self.cell, self.pbc, self.ptr

    def model_inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """``(pos, z, cell, pbc, ptr, edge_index, shifts)``: all the arguments of ``E3Relax`` (a model
        given no graph builds its own)."""
        return self.pos, self.z, self.cell, self.pbc, self.ptr, self.edge_index, self.shifts


def flat_graph(edge_indices: Sequence[np.ndarray], shifts: Sequence[np.ndarray],
               ptr: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The graphs of the structures of a batch, each with structure-local atom indices (``[2, E_b]``),
    as one flat ``edge_index [2, E]`` (offset by ``ptr``) and ``shifts [E, 3]``, both int64."""
    if not edge_indices:
        return torch.zeros((2, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.long)
    edges = np.concatenate([np.asarray(e, dtype=np.int64) + int(ptr[b]) for b, e in enumerate(edge_indices)], axis=1)
    flat_shifts = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1, 3) for s in shifts])
    return torch.from_numpy(np.ascontiguousarray(edges)), torch.from_numpy(flat_shifts)


def pack_greedy(num_atoms: Sequence[int], max_structures: int, max_atoms: int = 0,
                num_edges: Sequence[int] | None = None, max_edges: int = 0) -> list[list[int]]:
    """Cut items ``0..len(num_atoms)-1``, in that order, into consecutive batches of at most
    ``max_structures`` items, ``max_atoms`` atoms and ``max_edges`` edges (0: no such budget); a batch
    closes when the next item would break a budget, and an item over a budget on its own goes alone.
    Returns the item positions of each batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    atoms = edges = 0
    for position, n in enumerate(num_atoms):
        e = int(num_edges[position]) if num_edges is not None else 0
        if current and (len(current) >= max_structures or (max_atoms and atoms + n > max_atoms)
                        or (max_edges and edges + e > max_edges)):
            batches.append(current)
            current, atoms, edges = [], 0, 0
        current.append(position)
        atoms += int(n)
        edges += e
    if current:
        batches.append(current)
    return batches


def pack_batches(order: np.ndarray, num_atoms: np.ndarray, max_structures: int, max_atoms: int) -> list[np.ndarray]:
    """Store pair indices (in ``order``) packed into batches by :func:`pack_greedy` (a pair larger than
    the atom budget goes alone)."""
    order = np.asarray(order)
    groups = pack_greedy(num_atoms[order].tolist(), max_structures, max_atoms)
    return [order[group] for group in groups]
