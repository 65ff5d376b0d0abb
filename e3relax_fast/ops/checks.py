"""Input validation for flat crystal batches, with errors that name the structure and the field.

A batch is ``pos [N,3]`` (Å), ``cell [B,3,3]`` (Å, lattice vectors as rows), ``pbc [B,3]`` bool,
``ptr [B+1]`` long (atoms of structure b are ``ptr[b]:ptr[b+1]``) and optionally ``z [N]`` long.
Every check raises ``ValueError``; ``names`` (one per structure) makes the message name the structure
by its id rather than its index.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: Cartesian coordinates beyond this (Å) are refused: no crystal is that large, and products of such
#: numbers lose every digit of an interatomic distance.
MAX_COORDINATE = 1e6
#: |det L| / (|a| |b| |c|) below this is a singular (flat) cell: the sine of the smallest angle
#: between a lattice vector and the plane of the other two.
SINGULAR_CELL_TOLERANCE = 1e-6


def structure_label(index: int, names: Sequence[str] | None = None) -> str:
    if names is not None and index < len(names) and names[index] is not None:
        return f"structure {index} ({names[index]!r})"
    return f"structure {index}"


def _first_structure_of_atom(ptr: Tensor, atom: int) -> int:
    return int(torch.searchsorted(ptr, torch.tensor([atom], dtype=ptr.dtype), right=True)[0]) - 1


def check_batch(
    pos: Tensor,
    cell: Tensor,
    pbc: Tensor,
    ptr: Tensor,
    z: Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
    num_elements: int = 118,
    allow_empty: bool = False,
) -> None:
    """Raise ``ValueError`` naming the first bad structure and field, or return None."""
    _check_shapes(pos, cell, pbc, ptr)
    ptr_cpu = ptr.detach().cpu().long()
    _check_ptr(ptr_cpu, pos.shape[0], names, allow_empty)
    if z is not None:
        _check_atomic_numbers(z, ptr_cpu, pos.shape[0], names, num_elements)
    _check_positions(pos, ptr_cpu, names)
    if ptr.numel() > 1:
        _check_cells(cell, pbc, names)


def _check_shapes(pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> None:
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"field 'ptr' must be a 1-D integer tensor [B+1], got {tuple(ptr.shape)} {ptr.dtype}")
    num_structures = ptr.numel() - 1
    if pos.dim() != 2 or pos.shape[1] != 3 or not pos.is_floating_point():
        raise ValueError(f"field 'pos' must be a float tensor [N,3], got {tuple(pos.shape)} {pos.dtype}")
    if tuple(cell.shape) != (num_structures, 3, 3) or not cell.is_floating_point():
        raise ValueError(f"field 'cell' must be a float tensor [B,3,3] with B={num_structures} (from ptr), "
                         f"got {tuple(cell.shape)} {cell.dtype}")
    if tuple(pbc.shape) != (num_structures, 3) or pbc.dtype != torch.bool:
        raise ValueError(f"field 'pbc' must be a bool tensor [B,3] with B={num_structures}, "
                         f"got {tuple(pbc.shape)} {pbc.dtype}")


def _check_ptr(ptr_cpu: Tensor, num_atoms: int, names: Sequence[str] | None, allow_empty: bool) -> None:
    if int(ptr_cpu[0]) != 0:
        raise ValueError(f"field 'ptr' must start at 0, got {int(ptr_cpu[0])}")
    if int(ptr_cpu[-1]) != num_atoms:
        raise ValueError(f"field 'ptr' ends at {int(ptr_cpu[-1])} but 'pos' has {num_atoms} atoms")
    sizes = ptr_cpu[1:] - ptr_cpu[:-1]
    if (sizes < 0).any():
        b = int(torch.nonzero(sizes < 0)[0])
        raise ValueError(f"{structure_label(b, names)}: field 'ptr' decreases ({int(ptr_cpu[b])} -> "
                         f"{int(ptr_cpu[b + 1])})")
    if not allow_empty and (sizes == 0).any():
        b = int(torch.nonzero(sizes == 0)[0])
        raise ValueError(f"{structure_label(b, names)}: field 'pos' is empty (the structure has no atoms)")


def _check_atomic_numbers(z: Tensor, ptr_cpu: Tensor, num_atoms: int, names: Sequence[str] | None,
                          num_elements: int) -> None:
    if tuple(z.shape) != (num_atoms,) or z.is_floating_point() or z.dtype == torch.bool:
        raise ValueError(f"field 'z' must be an integer tensor [N] with N={num_atoms}, got {tuple(z.shape)} {z.dtype}")
    bad = (z < 1) | (z > num_elements)
    if bad.any():
        atom = int(torch.nonzero(bad)[0])
        b = _first_structure_of_atom(ptr_cpu, atom)
        raise ValueError(f"{structure_label(b, names)}: field 'z' holds atomic number {int(z[atom])} "
                         f"at atom {atom - int(ptr_cpu[b])}, outside 1..{num_elements}")


def _check_positions(pos: Tensor, ptr_cpu: Tensor, names: Sequence[str] | None) -> None:
    for bad, what in ((~torch.isfinite(pos).all(dim=1), "is not finite"),
                      ((pos.abs() > MAX_COORDINATE).any(dim=1), f"is beyond {MAX_COORDINATE:g} Å")):
        if bad.any():
            atom = int(torch.nonzero(bad)[0])
            b = _first_structure_of_atom(ptr_cpu, atom)
            raise ValueError(f"{structure_label(b, names)}: field 'pos' {what} at atom {atom - int(ptr_cpu[b])}: "
                             f"{pos[atom].tolist()}")


def _check_cells(cell: Tensor, pbc: Tensor, names: Sequence[str] | None) -> None:
    finite_cells = torch.isfinite(cell).flatten(1).all(dim=1)
    if not finite_cells.all():
        b = int(torch.nonzero(~finite_cells)[0])
        raise ValueError(f"{structure_label(b, names)}: field 'cell' is not finite: {cell[b].tolist()}")
    cell64 = cell.detach().double()
    row_lengths = cell64.norm(dim=2)
    flatness = torch.linalg.det(cell64).abs() / row_lengths.prod(dim=1).clamp(min=1e-300)
    singular = flatness < SINGULAR_CELL_TOLERANCE
    if singular.any():
        b = int(torch.nonzero(singular)[0])
        if not bool(pbc[b].any()):
            raise ValueError(f"{structure_label(b, names)}: field 'cell' is empty or flat and the structure is not "
                             "periodic (a molecule?): E3Relax relaxes crystals; give it a cell (a box with "
                             "vacuum around a molecule) and periodic boundaries")
        raise ValueError(f"{structure_label(b, names)}: field 'cell' is singular (lattice vectors are "
                         f"linearly dependent or zero; |det| = {float(torch.linalg.det(cell64[b]).abs()):.3g} Å^3)")
