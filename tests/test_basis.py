"""The same crystal gets the same prediction whatever basis describes its lattice: the relaxer hands
the model the Niggli-reduced basis and maps the predicted cell back to the user's basis."""

import itertools

import numpy as np
import pytest
import torch
from ase.io import read

from e3relax_fast import E3Relaxer
from e3relax_fast.data import reduce_basis

from .conftest import DATA

# unimodular changes of basis (rows: new vectors in the old ones): shears, a triple sum, a sign pair
CHANGES = [np.array(m) for m in (
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]],
    [[1, 0, 0], [0, 1, 0], [1, 1, 1]],
    [[1, -1, 0], [0, 1, 2], [0, 0, 1]],
    [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
)] + [np.eye(3, dtype=int)[list(p)] for p in itertools.permutations(range(3)) if p != (0, 1, 2)]


@pytest.fixture(scope="module")
def crystals():
    return read(DATA / "examples_relaxed.extxyz", index=":4")


@pytest.fixture
def relaxer(make_model):
    return E3Relaxer(make_model(layers=2), device="cpu", dtype=torch.float64, max_volume_factor=float("inf"))


def in_basis(atoms, change):
    other = atoms.copy()
    other.set_cell(change @ atoms.cell.array, scale_atoms=False)  # the same lattice, the same atoms
    return other


@pytest.mark.parametrize("change", CHANGES, ids=lambda m: "".join(str(v) for v in m.ravel()))
def test_reduce_basis_gives_one_basis_per_lattice(crystals, change):
    for atoms in crystals:
        reduced, make = reduce_basis(atoms.cell.array)
        other, make_other = reduce_basis(change @ atoms.cell.array)
        np.testing.assert_allclose(other, reduced, atol=1e-9, rtol=0)
        np.testing.assert_allclose(make_other @ change @ atoms.cell.array, other, atol=1e-12, rtol=0)
        assert abs(round(np.linalg.det(make))) == 1 and np.linalg.det(reduced) > 0


@pytest.mark.parametrize("change", CHANGES, ids=lambda m: "".join(str(v) for v in m.ravel()))
def test_a_change_of_basis_changes_no_prediction(crystals, relaxer, change):
    for atoms in crystals:
        base = relaxer.relax(atoms).final_structure
        moved = relaxer.relax(in_basis(atoms, change)).final_structure
        np.testing.assert_allclose(moved.positions, base.positions, atol=1e-9, rtol=0)
        # the predicted cell comes back in the basis it was given in
        np.testing.assert_allclose(moved.cell.array, change @ base.cell.array, atol=1e-9, rtol=0)


def test_the_model_alone_is_not_basis_invariant(crystals, make_model):
    """Why the relaxer reduces: the network itself predicts differently in another basis."""
    model = make_model(layers=2)
    atoms = crystals[0]

    def predict(cell):
        pos = torch.from_numpy(atoms.positions)
        z = torch.from_numpy(atoms.numbers).long()
        _, cells = model(pos, z, torch.from_numpy(cell)[None], torch.ones(1, 3, dtype=torch.bool),
                         torch.tensor([0, len(atoms)]))
        return cells[-1, 0].detach().numpy()

    change = CHANGES[0]
    cell = atoms.cell.array
    assert np.abs(predict(change @ cell) - change @ predict(cell)).max() > 1e-4


def test_partly_periodic_structures_keep_their_basis():
    cell = np.diag([3.0, 4.0, 20.0])
    reduced, make = reduce_basis(cell, np.array([True, True, False]))
    np.testing.assert_array_equal(reduced, cell)
    np.testing.assert_array_equal(make, np.eye(3))
