"""Metrics on hand-made cases: identity, translations by lattice vectors, known strain, the Dummy baseline."""

import numpy as np
import pytest
from ase.build import bulk

from e3relax_fast.metrics import (evaluate_pairs, format_summary, geometry_metrics, rows_frame, structure_metrics,
                                  summarize, symmetry_change)


def rutile_like():
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_identity_is_perfect():
    atoms = rutile_like()
    metrics = structure_metrics(atoms, atoms)
    assert metrics["coord_mae"] == 0 and metrics["metric_tensor_error"] == 0
    assert metrics["volume_error"] == 0 and metrics["cell_mae"] == 0
    assert metrics["matched"] == 1 and metrics["rmsd"] == pytest.approx(0, abs=1e-9)
    assert metrics["symmetry_1e-2"] == "kept" and metrics["symmetry_1e-5"] == "kept"


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
    assert metrics["matched"] == 0 and np.isnan(metrics["rmsd"])
    assert metrics["symmetry_1e-2"] == "lowered" and metrics["spacegroup_ref_1e-2"] == 225


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
    summary = summarize(rows).set_index(["group", "method", "metric"])
    assert summary.loc[("g", "dummy", "coord_mae"), "mean"] == pytest.approx(0.1)
    assert summary.loc[("g", "model", "coord_mae"), "count"] == 1


def test_different_atoms_are_refused():
    with pytest.raises(ValueError, match="different atoms"):
        structure_metrics(bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.0))


def test_rmsd_is_pymatgens_normalised_displacement():
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    reference = rutile_like()
    moved = reference.copy()
    moved.rattle(0.05, seed=7)
    metrics = structure_metrics(moved, reference)
    expected = StructureMatcher().get_rms_dist(AseAtomsAdaptor.get_structure(moved),
                                               AseAtomsAdaptor.get_structure(reference))
    assert metrics["matched"] == 1
    assert metrics["rmsd"] == pytest.approx(expected[0]) and metrics["max_dist"] == pytest.approx(expected[1])
    assert 0 < metrics["rmsd"] < 0.2 / (reference.get_volume() / len(reference)) ** (1 / 3)


def test_symmetry_kept_lowered_raised_at_both_tolerances():
    perfect = bulk("Cu", "fcc", a=3.6, cubic=True)
    slightly = perfect.copy()
    slightly.positions[0] += [1e-3, 0.0, 0.0]  # below 1e-2 Å, above 1e-5 Å
    lowered = structure_metrics(slightly, perfect)
    assert lowered["symmetry_1e-2"] == "kept" and lowered["symmetry_1e-5"] == "lowered"
    raised = structure_metrics(perfect, slightly)
    assert raised["symmetry_1e-2"] == "kept" and raised["symmetry_1e-5"] == "raised"
    assert symmetry_change((221, 48), (225, 48)) == "changed"


def test_summary_gives_median_and_p90_and_counts_unmatched():
    reference = rutile_like()
    items = []
    for k, shift in enumerate([0.01, 0.02, 0.03, 0.04, 2.0]):
        prediction = reference.copy()
        prediction.positions[0] += [shift, 0.0, 0.0]
        items.append((f"s{k}", "g", prediction, reference, None, {"last_layer_max_move": shift}))
    frame = rows_frame(evaluate_pairs(items))
    assert frame["last_layer_max_move"].tolist() == [0.01, 0.02, 0.03, 0.04, 2.0]
    summary = summarize(frame).set_index(["group", "method", "metric"])
    errors = frame["coord_mae"]
    row = summary.loc[("g", "model", "coord_mae")]
    assert row["mean"] == pytest.approx(errors.mean()) and row["median"] == pytest.approx(errors.median())
    assert row["p90"] == pytest.approx(errors.quantile(0.9)) and row["median"] < row["mean"]
    matched = summary.loc[("g", "model", "matched")]
    assert matched["mean"] == pytest.approx(frame["matched"].mean()) and frame["matched"].iloc[-1] == 0
    assert summary.loc[("g", "model", "rmsd"), "count"] == frame["matched"].sum()
    text = format_summary(summarize(frame))
    assert "1 unmatched" in text and "p90" in text


def test_evaluation_errors_are_rows_naming_the_structure_and_the_rest_is_scored():
    rows = evaluate_pairs([("bad", "g", bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.0), None),
                           ("good", "g", bulk("Al", "fcc", a=4.1), bulk("Al", "fcc", a=4.0), None)], symmetry=False)
    assert "structure 'bad'" in rows[0].metrics["error"] and "'numbers'" in rows[0].metrics["error"]
    assert rows[1].id == "good" and rows[1].metrics["coord_mae"] >= 0


def test_atoms_in_another_order_are_matched_by_species_and_position():
    import numpy as np

    from e3relax_fast.metrics import in_reference_order

    ref = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    shuffled = ref.copy()
    order = np.random.default_rng(0).permutation(len(ref))
    shuffled = shuffled[order]
    shuffled.positions += 0.05  # a slightly moved prediction
    (row,) = evaluate_pairs([("x", "g", shuffled, ref, None)], symmetry=False)
    assert row.metrics["coord_mae"] == pytest.approx(0.05, abs=1e-9)
    arrays = (shuffled.positions, shuffled.numbers, shuffled.cell[:], shuffled.pbc)
    aligned = in_reference_order(arrays, (ref.positions, ref.numbers, ref.cell[:], ref.pbc))
    np.testing.assert_array_equal(aligned[1], ref.numbers)
    np.testing.assert_allclose(aligned[0], ref.positions + 0.05)


def test_a_non_finite_prediction_is_an_error_naming_the_structure():
    import numpy as np
    import pytest

    from e3relax_fast.metrics import evaluate_pairs

    pos = np.array([[0.0, 0.0, 0.0], [1.5, 1.5, 1.5]])
    ref = (pos, np.array([11, 17]), np.eye(3) * 3.0, np.ones(3, dtype=bool))
    bad = (pos * np.nan, ref[1], ref[2], ref[3])
    (row,) = evaluate_pairs([("x", "g", bad, ref, ref)], symmetry=False)
    assert "structure 'x'" in row.metrics["error"] and "not finite" in row.metrics["error"]
