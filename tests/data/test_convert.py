"""Structures to tensors and back: types, order and metadata survive; bad inputs are named."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from pymatgen.core import Lattice, Structure

from e3relax_fast.data import batch_from_structures, structures_from_batch, unwrap_positions


def nacl_structure():
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], site_properties={"tag": [1, 2]})


def test_atoms_and_structures_to_one_batch_and_back():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["id"] = "cu"
    structure = nacl_structure()
    batch = batch_from_structures([atoms, structure], ids=["cu", "nacl"])
    assert batch.ptr.tolist() == [0, 4, 6]
    assert batch.z.tolist() == [29, 29, 29, 29, 11, 17]
    np.testing.assert_allclose(batch.cell[1].numpy(), structure.lattice.matrix)
    new_pos = batch.pos + 0.1
    new_cell = batch.cell * 1.01
    out_atoms, out_structure = structures_from_batch([atoms, structure], new_pos, new_cell, batch.ptr)
    assert isinstance(out_atoms, Atoms) and isinstance(out_structure, Structure)
    np.testing.assert_allclose(out_atoms.positions, new_pos[:4].numpy())
    np.testing.assert_allclose(out_structure.cart_coords, new_pos[4:].numpy(), atol=1e-12)
    np.testing.assert_allclose(out_structure.lattice.matrix, new_cell[1].numpy())
    assert out_atoms.info["id"] == "cu" and out_structure.site_properties["tag"] == [1, 2]
    assert [str(s) for s in out_structure.species] == ["Na", "Cl"]
    # Inputs are not mutated.
    np.testing.assert_allclose(atoms.positions, batch.pos[:4].numpy())
    np.testing.assert_allclose(structure.cart_coords, batch.pos[4:].numpy())


def test_unknown_element_is_named():
    atoms = Atoms("CuX", positions=[[0, 0, 0], [1, 1, 1]], cell=np.eye(3) * 4, pbc=True)
    with pytest.raises(ValueError, match=r"structure 1 \('bad'\): field 'numbers' holds 0 at atom 1 \(symbol 'X'\)"):
        batch_from_structures([bulk("Cu"), atoms], ids=["good", "bad"])


def test_disordered_structure_is_named():
    structure = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match=r"structure 0 \('alloy'\): field 'species' is disordered"):
        batch_from_structures([structure], ids=["alloy"])


def test_empty_structure_and_nan_are_named():
    with pytest.raises(ValueError, match=r"structure 1 \('empty'\): field 'pos' is empty"):
        batch_from_structures([bulk("Cu"), Atoms(cell=np.eye(3) * 3, pbc=True)], ids=["cu", "empty"])
    broken = bulk("Cu")
    broken.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"structure 0 \('nan'\): field 'pos' is not finite"):
        batch_from_structures([broken], ids=["nan"])


def test_singular_cell_is_named():
    flat = Atoms("Cu", positions=[[0, 0, 0]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True)
    with pytest.raises(ValueError, match=r"structure 0 \('flat'\): field 'cell' is singular"):
        batch_from_structures([flat], ids=["flat"])


def test_unwrap_picks_the_nearest_image_even_in_a_skewed_cell():
    rng = np.random.default_rng(0)
    cell = torch.tensor([[4.0, 0.0, 0.0], [3.6, 1.5, 0.0], [0.5, 0.3, 5.0]], dtype=torch.float64)
    reference = torch.from_numpy(rng.uniform(0, 1, (20, 3))) @ cell
    true_target = reference + torch.from_numpy(rng.normal(scale=0.2, size=(20, 3)))
    wrapped = true_target + torch.from_numpy(rng.integers(-2, 3, (20, 3))).double() @ cell
    unwrapped = unwrap_positions(wrapped, cell, reference)
    torch.testing.assert_close(unwrapped, true_target, rtol=0, atol=1e-10)
    # Brute force: no lattice translation brings any atom closer.
    steps = torch.cartesian_prod(*[torch.arange(-3, 4, dtype=torch.float64)] * 3) @ cell
    best = ((unwrapped[:, None] + steps[None] - reference[:, None]) ** 2).sum(-1).min(dim=1)[0]
    torch.testing.assert_close(((unwrapped - reference) ** 2).sum(-1), best, rtol=0, atol=1e-12)
