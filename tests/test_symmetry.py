"""The input's space group kept by the prediction (issue 24, item 1): the projection itself, the relaxer
with the shipped model, stability under a micro-ångström jitter, and the switch."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from e3relax_fast import E3Relaxer
from e3relax_fast.metrics import symmetry_of
from e3relax_fast.symmetry import find_symmetry, project


def crystals() -> dict[str, Atoms]:
    monoclinic = Atoms("Ga2O2", scaled_positions=[[0.1, 0.25, 0.2], [0.9, 0.75, 0.8], [0.35, 0.25, 0.6],
                                                  [0.65, 0.75, 0.4]],
                       cell=[[5.0, 0, 0], [0, 3.1, 0], [-1.2, 0, 5.6]], pbc=True)
    return {
        "cubic SrZrO3": Atoms("SrZrO3", scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]],
                              cell=np.eye(3) * 4.2, pbc=True),
        "hexagonal Mg": bulk("Mg", "hcp", a=3.3, c=5.3),
        "tetragonal TiO2": Atoms("Ti2O4", scaled_positions=[[0, 0, 0], [.5, .5, .5], [.3, .3, 0], [.7, .7, 0],
                                                            [.8, .2, .5], [.2, .8, .5]], cell=[4.6, 4.6, 2.95], pbc=True),
        "monoclinic": monoclinic,
    }


def group(atoms_or_arrays, symprec=1e-3) -> int:
    if isinstance(atoms_or_arrays, Atoms):
        atoms_or_arrays = (atoms_or_arrays.positions, atoms_or_arrays.numbers, atoms_or_arrays.cell[:], None)
    return symmetry_of(atoms_or_arrays, symprec)[0]


@pytest.mark.parametrize("name", list(crystals()))
def test_projection_gives_the_group_back_and_is_a_projection(name):
    atoms = crystals()[name]
    symmetry = find_symmetry(atoms.positions, atoms.numbers, atoms.cell[:])
    assert symmetry is not None and symmetry.number == group(atoms)
    rng = np.random.default_rng(0)
    pos = atoms.positions + 0.05 * rng.standard_normal(atoms.positions.shape)
    cell = atoms.cell[:] @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3)))
    assert group((pos, atoms.numbers, cell, None), 1e-5) != symmetry.number
    projected = project(symmetry, pos, cell)
    assert group((*projected[:1], atoms.numbers, projected[1], None), 1e-5) == symmetry.number
    again = project(symmetry, *projected)
    np.testing.assert_allclose(again[0], projected[0], atol=1e-12)
    np.testing.assert_allclose(again[1], projected[1], atol=1e-12)


def test_a_crystal_without_symmetry_has_nothing_to_impose():
    rng = np.random.default_rng(1)
    atoms = Atoms("Al3O2", positions=rng.uniform(0, 4, (5, 3)), cell=np.diag([4.1, 4.5, 5.2]) + 0.3, pbc=True)
    assert find_symmetry(atoms.positions, atoms.numbers, atoms.cell[:]) is None


@pytest.fixture(scope="module")
def relaxer():
    return E3Relaxer.from_pretrained()


@pytest.mark.parametrize("name", list(crystals()))
def test_the_relaxer_keeps_the_inputs_group(relaxer, name):
    atoms = crystals()[name]
    result = relaxer.relax(atoms)
    assert result.ok and not result.warning
    assert group(result.final_structure) == group(atoms)
    assert result.symmetry.endswith(f"({group(atoms)})")
    assert not np.allclose(result.final_structure.cell[:], atoms.cell[:], atol=1e-3)  # it did move


def test_without_symprec_the_prediction_is_left_as_it_is(relaxer):
    atoms = crystals()["cubic SrZrO3"]
    plain = E3Relaxer(relaxer.model, relaxer.metadata, symprec=None).relax(atoms)
    assert plain.symmetry == "" and group(plain.final_structure) != group(atoms)
    np.testing.assert_allclose(plain.final_structure.positions, plain.trajectory[-1].positions)
    with pytest.raises(ValueError, match="symprec"):
        E3Relaxer(relaxer.model, relaxer.metadata, symprec=0.0)


@pytest.mark.parametrize("name", ["cubic SrZrO3", "tetragonal TiO2"])
def test_a_micro_angstrom_jitter_moves_the_prediction_by_about_as_much(relaxer, name):
    atoms = crystals()[name] * (2, 2, 2)
    jittered = atoms.copy()
    jittered.positions += 1e-6 * np.random.default_rng(2).standard_normal(atoms.positions.shape)
    a, b = relaxer.relax(atoms).final_structure, relaxer.relax(jittered).final_structure
    assert np.abs(a.positions - b.positions).max() < 2e-5
    assert np.abs(a.cell[:] - b.cell[:]).max() < 2e-5


def test_evaluate_imposes_the_inputs_group_unless_told_not_to():
    from e3relax_fast.cli.evaluate import _symmetric
    from e3relax_fast.symmetry import parse_symprec

    atoms = crystals()["cubic SrZrO3"]
    given = (atoms.positions, atoms.numbers, atoms.cell[:], np.ones(3, bool))
    rng = np.random.default_rng(4)
    prediction = (atoms.positions + 0.02 * rng.standard_normal((5, 3)), atoms.numbers,
                  atoms.cell[:] * 1.01 + 0.01 * rng.standard_normal((3, 3)), np.ones(3, bool))
    assert group(_symmetric(prediction, given, parse_symprec("0.01")), 1e-5) == 221
    assert _symmetric(prediction, given, parse_symprec("none")) is prediction
