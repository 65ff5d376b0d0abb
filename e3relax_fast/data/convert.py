"""Structures in, flat batched tensors out, and back.

The flat batch is :class:`~e3relax_fast.data.batching.CrystalBatch`. pymatgen ``Structure`` and ASE ``Atoms`` both go in; what comes back out has the
type, species, order and metadata of what went in, with the new positions and cell.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..ops.checks import check_batch, structure_label
from .batching import CrystalBatch


def _is_pymatgen(structure: Any) -> bool:
    return type(structure).__module__.startswith("pymatgen")


def structure_arrays(structure: Any, label: str = "structure") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(pos [n,3], z [n], cell [3,3], pbc [3])`` as numpy arrays from a Structure or Atoms.

    Raises ``ValueError`` naming ``label`` and the field for species that are not elements
    (dummy species, vacancies, partial occupancies).
    """
    if _is_pymatgen(structure):
        if not structure.is_ordered:
            raise ValueError(f"{label}: field 'species' is disordered (partial occupancies); "
                             "E3Relax needs one element per site")
        numbers = []
        for index, site in enumerate(structure):
            z = getattr(site.specie, "Z", 0)
            if not isinstance(z, int) or z < 1:
                raise ValueError(f"{label}: field 'species' holds {site.specie!s} at site {index}, "
                                 "which is not a known element")
            numbers.append(z)
        pos = np.asarray(structure.cart_coords, dtype=np.float64).reshape(-1, 3)
        cell = np.asarray(structure.lattice.matrix, dtype=np.float64)
        pbc = np.asarray(getattr(structure.lattice, "pbc", (True, True, True)), dtype=bool)
        return pos, np.asarray(numbers, dtype=np.int64), cell, pbc
    if hasattr(structure, "get_atomic_numbers") and hasattr(structure, "get_positions"):
        numbers = np.asarray(structure.get_atomic_numbers(), dtype=np.int64)
        unknown = np.nonzero(numbers < 1)[0]
        if unknown.size:
            raise ValueError(f"{label}: field 'numbers' holds {int(numbers[unknown[0]])} at atom "
                             f"{int(unknown[0])} (symbol {structure.get_chemical_symbols()[unknown[0]]!r}), "
                             "which is not a known element")
        return (np.asarray(structure.get_positions(), dtype=np.float64).reshape(-1, 3), numbers,
                np.asarray(structure.cell.array, dtype=np.float64), np.asarray(structure.pbc, dtype=bool))
    raise TypeError(f"{label}: expected a pymatgen Structure or an ASE Atoms, got {type(structure).__name__}")


def batch_from_arrays(arrays: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                      ids: Sequence[str] | None = None, dtype: torch.dtype = torch.float64,
                      num_elements: int = 118, validate: bool = True) -> CrystalBatch:
    """Stack per-structure ``(pos, z, cell, pbc)`` arrays into a :class:`CrystalBatch`, validated unless
    the caller has checked every structure already (``validate=False``: the relaxer checks each alone,
    so that one bad input never fails its batch)."""
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(arrays))]
    sizes = [len(a[1]) for a in arrays]
    ptr = torch.zeros(len(arrays) + 1, dtype=torch.long)
    if arrays:
        ptr[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.long), 0)

    def cat(index: int, shape: tuple[int, ...], np_dtype: Any) -> np.ndarray:
        parts = [np.asarray(a[index], dtype=np_dtype).reshape(shape) for a in arrays]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dtype=np_dtype)
    batch = CrystalBatch(
        pos=torch.from_numpy(cat(0, (-1, 3), np.float64)).to(dtype),
        z=torch.from_numpy(cat(1, (-1,), np.int64)),
        cell=torch.from_numpy(cat(2, (1, 3, 3), np.float64)).to(dtype),
        pbc=torch.from_numpy(cat(3, (1, 3), bool)),
        ptr=ptr,
        ids=ids,
    )
    if validate:
        check_batch(batch.pos, batch.cell, batch.pbc, batch.ptr, batch.z, names=ids, num_elements=num_elements)
    return batch


def batch_from_structures(structures: Iterable[Any], ids: Sequence[str] | None = None,
                          dtype: torch.dtype = torch.float64, num_elements: int = 118) -> CrystalBatch:
    """Flat batch from pymatgen Structures and/or ASE Atoms (validated; errors name the structure)."""
    structures = list(structures)
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(structures))]
    arrays = [structure_arrays(s, structure_label(i, ids)) for i, s in enumerate(structures)]
    return batch_from_arrays(arrays, ids, dtype, num_elements)


def with_geometry(template: Any, pos: np.ndarray | Tensor, cell: np.ndarray | Tensor) -> Any:
    """A copy of ``template`` (Structure or Atoms) with new Cartesian positions [n,3] and cell [3,3] (Å).

    Species, order, site properties and metadata are kept; ``template`` is not modified.
    """
    pos = np.asarray(pos.detach().cpu() if isinstance(pos, Tensor) else pos, dtype=np.float64)
    cell = np.asarray(cell.detach().cpu() if isinstance(cell, Tensor) else cell, dtype=np.float64)
    if _is_pymatgen(template):
        from pymatgen.core import Lattice, Structure

        lattice = Lattice(cell, pbc=tuple(bool(p) for p in template.lattice.pbc))
        return Structure(lattice, template.species, pos, coords_are_cartesian=True,
                         site_properties=copy.deepcopy(template.site_properties),
                         properties=copy.deepcopy(getattr(template, "properties", {})))
    atoms = template.copy()
    atoms.set_cell(cell, scale_atoms=False)
    atoms.set_positions(pos)
    return atoms


def structures_from_batch(templates: Sequence[Any], pos: Tensor, cell: Tensor, ptr: Tensor) -> list[Any]:
    """Split flat ``pos [N,3]``/``cell [B,3,3]`` back into structures of the templates' types."""
    return [with_geometry(t, pos[int(ptr[b]):int(ptr[b + 1])], cell[b]) for b, t in enumerate(templates)]


def unwrap_positions(pos: Tensor, cell: Tensor, reference: Tensor) -> Tensor:
    """Each atom of ``pos`` moved by the lattice translation of ``cell`` that brings it nearest its
    counterpart in ``reference`` (Euclidean distance).

    The fractional difference is rounded first, then the 27 translations around it are tried, which
    also finds the nearest image in skewed cells. Shapes: pos, reference [n, 3]; cell [3, 3] (Å).
    """
    frac = (pos - reference) @ torch.linalg.inv(cell)
    base = pos - torch.round(frac) @ cell
    steps = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=pos.dtype)] * 3).to(pos.device)
    candidates = base.unsqueeze(1) + (steps @ cell).unsqueeze(0)  # [n, 27, 3]
    best = ((candidates - reference.unsqueeze(1)) ** 2).sum(-1).argmin(dim=1)
    return candidates[torch.arange(pos.shape[0], device=pos.device), best]


def reduce_basis(cell: np.ndarray, pbc: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Niggli-reduced basis of a lattice and the integer matrix that makes it.

    Returns ``(reduced [3,3], change [3,3] int)`` with ``reduced = change @ cell`` (rows are lattice
    vectors, Å), ``det(change) = +-1`` and ``det(reduced) > 0``: the three vectors negated together
    when Niggli's algorithm (ASE's ``niggli_reduce_cell``) gives a left-handed basis, since both signs
    satisfy its conditions. Every basis of one lattice gives the same reduced basis (to rounding)
    unless the lattice's metric has symmetry (equal lengths, right angles), where Niggli's conditions
    leave a choice among equivalent bases. A structure that is not periodic along all three axes is
    returned as it is (identity): its cell vectors are not lattice vectors to mix.
    """
    cell = np.asarray(cell, dtype=np.float64)
    identity = np.eye(3, dtype=np.int64)
    if pbc is not None and not np.all(pbc):
        return cell.copy(), identity
    from ase.build.tools import niggli_reduce_cell

    _, transform = niggli_reduce_cell(cell)  # its cell is rotated to a standard orientation; ours is not
    change = np.asarray(transform, dtype=np.int64).T  # ASE's matrix acts on columns
    if np.linalg.det(change @ cell) < 0:
        change = -change
    return change.astype(np.float64) @ cell, change
