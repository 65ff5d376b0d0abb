"""Perturbation pairs from relaxed structures (``e3relax preprocess --structures``)."""

import numpy as np
import pytest
from ase.io import read

from e3relax_fast.data.perturb import PerturbConfig, perturbed_input, structure_pairs
from e3relax_fast.data.store import PairStore

from ..conftest import DATA

EXAMPLES = DATA / "examples_relaxed.extxyz"


def relaxed_side(rng, n=6):
    cell = np.diag([4.0, 5.0, 6.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    return rng.uniform(0, 1, (n, 3)) @ cell, cell


def test_without_strain_or_rattle_the_input_is_the_target_rescaled_to_a_drawn_volume(rng):
    pos, cell = relaxed_side(rng)
    how = PerturbConfig(strain=0.0, volume=0.05, rattle_min=0.0, rattle_max=0.0)
    centre = 1.3 * abs(np.linalg.det(cell))
    new_pos, new_cell = perturbed_input(pos, cell, centre, rng, how)
    scale = new_cell[0, 0] / cell[0, 0]
    np.testing.assert_allclose(new_cell, scale * cell, rtol=1e-12)
    np.testing.assert_allclose(new_pos, scale * pos, rtol=1e-12, atol=1e-12)  # fractional coordinates kept
    assert 0.95 - 1e-12 <= abs(np.linalg.det(new_cell)) / centre <= 1.05 + 1e-12


def test_strain_is_symmetric_and_the_fractional_centroid_is_kept(rng):
    pos, cell = relaxed_side(rng, n=9)
    how = PerturbConfig(strain=0.04, volume=0.0, rattle_min=0.05, rattle_max=0.05)
    new_pos, new_cell = perturbed_input(pos, cell, abs(np.linalg.det(cell)), rng, how)
    deformation = np.linalg.solve(cell, new_cell)  # L D = L'
    np.testing.assert_allclose(deformation, deformation.T, atol=1e-12)
    assert 0 < np.abs(deformation - np.eye(3)).max() <= 0.04 + 1e-12
    frac_before = np.linalg.solve(cell.T, pos.T).T
    frac_after = np.linalg.solve(new_cell.T, new_pos.T).T
    np.testing.assert_allclose(frac_after.mean(axis=0), frac_before.mean(axis=0), atol=1e-12)
    assert np.abs(frac_after - frac_before).max() > 1e-3  # the rattle did move the atoms


def test_default_perturbation_is_as_far_as_generated_crystals(rng):
    pos, cell = relaxed_side(rng, n=20)
    moves, volumes = [], []
    for _ in range(200):
        new_pos, new_cell = perturbed_input(pos, cell, abs(np.linalg.det(cell)), rng, PerturbConfig())
        strained = pos @ np.linalg.solve(cell, new_cell)
        moves.append(np.linalg.norm(new_pos - strained, axis=1).mean())
        volumes.append(abs(np.linalg.det(new_cell) / np.linalg.det(cell)) - 1)
    assert 0.07 < np.mean(moves) < 0.13
    assert 0.07 < np.max(np.abs(volumes)) < 0.25


def test_stored_perturbations_depend_on_seed_and_id_only():
    first = {r.id: r for r in structure_pairs(EXAMPLES, seed=0)}
    again = {r.id: r for r in structure_pairs(EXAMPLES, seed=0)}
    other_seed = {r.id: r for r in structure_pairs(EXAMPLES, seed=1)}
    assert len(first) == 20 and all(r.ok and r.kind == "perturbation" for r in first.values())
    for structure_id, record in first.items():
        np.testing.assert_array_equal(record.unrelaxed[0], again[structure_id].unrelaxed[0])
        assert not np.array_equal(record.unrelaxed[0], other_seed[structure_id].unrelaxed[0])
        np.testing.assert_array_equal(record.relaxed[1], record.unrelaxed[1])


def test_two_preprocess_runs_write_identical_validation_inputs(tmp_path):
    from e3relax_fast.cli import main

    for name in ("a", "b"):
        assert main(["preprocess", "--no-progress", "--structures", str(EXAMPLES), "--val-fraction", "0.3",
                     "-o", str(tmp_path / name)]) == 0
    a, b = PairStore(tmp_path / "a"), PairStore(tmp_path / "b")
    assert len(a.indices("val")) > 0 and a.meta["perturbation"] == PerturbConfig().to_dict()
    for index in a.indices("val"):
        pa, pb = a.pair(int(index)), b.pair(int(index))
        for name in ("pos_unrelaxed", "cell_unrelaxed", "pos_relaxed", "cell_relaxed", "edges"):
            np.testing.assert_array_equal(pa[name], pb[name])
    # the group is the io reader's (e3relax_fast/io/structures.py, GROUP_KEYS): these carry a prototype
    prototypes = {frame.info["id"]: frame.info["prototype"] for frame in read(EXAMPLES, ":")}
    assert set(a.kinds) == {"perturbation"} and a.groups == [prototypes[i] for i in a.ids]


def test_a_structure_source_splits_by_mp_id_and_bounds_the_size(tmp_path):
    from ase.io import read, write

    frames = read(EXAMPLES, index=":")
    for k, atoms in enumerate(frames):
        atoms.info = {"id": f"s{k}", "mp_id": f"mp-{k // 2}"}  # two structures per material
    write(tmp_path / "mp.extxyz", frames)
    records = list(structure_pairs(tmp_path / "mp.extxyz", max_atoms=8))
    assert [r.group for r in records] == [f"mp-{int(r.id[1:]) // 2}" for r in records]
    assert len(records) == sum(len(a) <= 8 for a in frames) < len(frames)


def test_bad_structure_sources_are_errors_naming_the_problem(tmp_path):
    from ase import Atoms

    from ase.io import write
    with pytest.raises(FileNotFoundError, match="does not exist"):
        structure_pairs(tmp_path / "missing.extxyz")
    write(tmp_path / "molecule.extxyz", [Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])])
    (record,) = structure_pairs(tmp_path / "molecule.extxyz")
    assert not record.ok and "'pbc'" in record.error
    with pytest.raises(ValueError, match="rattle_min <= rattle_max"):
        PerturbConfig(rattle_min=0.3, rattle_max=0.1)
