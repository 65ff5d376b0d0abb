"""Metrics on hand-made cases: identity, translations by lattice vectors, known strain, the Dummy baseline."""

import numpy as np
import pytest
from ase.build import bulk

from e3relax_fast.metrics import evaluate_pairs, geometry_metrics, structure_metrics, summarize


def rutile_like():
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_identity_is_perfect():
    atoms = rutile_like()
    metrics = structure_metrics(atoms, atoms)
    assert metrics["coord_mae"] == 0 and metrics["metric_tensor_error"] == 0
    assert metrics["volume_error"] == 0 and metrics["cell_mae"] == 0
    assert metrics["match"] == 1 and metrics["spacegroup_preserved"] == 1


def test_atoms_moved_by_lattice_vectors_are_the_same_positions():
    atoms = rutile_like()
    moved = atoms.copy()
    moved.positions[0] += atoms.cell[0] - 2 * atoms.cell[2]
    moved.positions[3] += atoms.cell[1]
    metrics = structure_metrics(moved, atoms, symmetry=False)
    assert metrics["coord_mae"] == pytest.approx(0, abs=1e-12)


def test_small_translation_and_known_strain():
    atoms = rutile_like()
    shifted = atoms.copy()
    shifted.positions += [0.03, -0.06, 0.0]
    assert structure_metrics(shifted, atoms, symmetry=False)["coord_mae"] == pytest.approx(0.03)
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * 1.1, scale_atoms=True)
    metrics = geometry_metrics(strained.positions, strained.cell.array, atoms.positions, atoms.cell.array)
    a = 5.6
    assert metrics["volume_error"] == pytest.approx(1.1 ** 3 - 1)
    assert metrics["cell_mae"] == pytest.approx(0.1 * a * 3 / 9)  # three nonzero entries of a cubic cell
    assert metrics["metric_tensor_error"] == pytest.approx(np.sqrt(3) * a * a * (1.1 ** 2 - 1))
    # the metric tensor does not see rotations
    rotated = atoms.copy()
    rotated.rotate(30, "z", rotate_cell=True)
    assert structure_metrics(rotated, atoms, symmetry=False)["metric_tensor_error"] == pytest.approx(0, abs=1e-9)


def test_structure_matcher_and_spacegroup_fail_on_a_different_structure():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    distorted = atoms.copy()
    distorted.positions[0] += [0.6, 0.0, 0.0]
    metrics = structure_metrics(distorted, atoms)
    assert metrics["spacegroup_preserved"] == 0 and metrics["match"] == 0


def test_dummy_baseline_is_the_input_scored_as_a_prediction():
    reference = rutile_like()
    unrelaxed = reference.copy()
    unrelaxed.positions += 0.1
    prediction = reference.copy()
    prediction.positions += 0.02
    rows = evaluate_pairs([("x", "g", prediction, reference, unrelaxed)], symmetry=False)
    assert [r.method for r in rows] == ["model", "dummy"]
    assert rows[0].metrics["coord_mae"] == pytest.approx(0.02)
    assert rows[1].metrics == structure_metrics(unrelaxed, reference, symmetry=False)
    summary = summarize(rows)
    assert summary[("all", "dummy")]["coord_mae"] == pytest.approx(0.1)
    assert summary[("g", "model")]["count"] == 1


def test_different_atoms_are_refused():
    with pytest.raises(ValueError, match="different atoms"):
        structure_metrics(bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.0))
