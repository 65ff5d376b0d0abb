"""E3Relaxer: the type in is the type out, inputs untouched, batches equal singles, order kept, bad
inputs and unseen elements reported per structure."""

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from pymatgen.core import Lattice, Structure

from e3relax_fast import E3Relaxer, RelaxResult
from e3relax_fast.relax import BatchBudget, Refinement
from e3relax_fast.data import batch_from_arrays, batch_from_structures, reduce_basis, structure_arrays
from e3relax_fast.model.checkpoint import save_checkpoint


@pytest.fixture
def relaxer(make_model, tmp_path):
    model = make_model(layers=2)
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model.state_dict(), {"model_config": model.config.to_dict(),
                                               "elements": [11, 13, 14, 17, 29]})
    # random weights change volumes freely: the volume bound is tested on its own below; these tests
    # compare the relaxer with the model's own output, so no symmetry is imposed (tests/test_symmetry.py)
    return E3Relaxer.from_pretrained(path, device="cpu", dtype=torch.float64, max_volume_factor=float("inf"),
                                     symprec=None)


def structures():
    cu = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    cu.rattle(0.05, seed=1)
    nacl = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.52, 0.5, 0.5]])
    si = bulk("Si", "diamond", a=5.43)
    return [cu, nacl, si]


def test_the_type_in_is_the_type_out_and_inputs_are_not_mutated(relaxer):
    cu, nacl, _ = structures()
    cu_before, nacl_before = cu.positions.copy(), nacl.cart_coords.copy()
    out_cu, out_nacl = relaxer.relax(cu), relaxer.relax(nacl)
    assert isinstance(out_cu.final_structure, Atoms) and isinstance(out_nacl["final_structure"], Structure)
    assert np.array_equal(cu.positions, cu_before) and np.array_equal(nacl.cart_coords, nacl_before)
    assert len(out_cu.trajectory) == 2 and out_cu.trajectory[-1] is out_cu.final_structure
    assert not np.allclose(out_cu.final_structure.positions, cu_before)  # the model did move atoms
    assert out_cu.confidence["last_layer_max_move"] > 0 and "last_layer_cell_change" in out_cu.confidence
    assert out_cu.final_structure.get_chemical_symbols() == cu.get_chemical_symbols()


def test_batches_equal_singles_and_results_keep_input_order(relaxer):
    items = structures() * 3
    singles = [relaxer.relax(s) for s in items]
    many = list(relaxer.relax_many(items, budget=BatchBudget(max_atoms=5, window=4)))
    assert [r.id for r in many] == [str(i) for i in range(len(items))]
    for single, batched in zip(singles, many):
        assert batched.ok
        np.testing.assert_allclose(_positions(batched.final_structure), _positions(single.final_structure),
                                   rtol=0, atol=1e-10)


def _positions(structure):
    return structure.positions if isinstance(structure, Atoms) else structure.cart_coords


def test_bad_inputs_and_unseen_elements_are_reported_per_structure(relaxer):
    cu, nacl, _ = structures()
    broken = cu.copy()
    broken.positions[0, 0] = np.nan
    gold = bulk("Au", "fcc", a=4.08)
    results = list(relaxer.relax_many([("a", cu), ("b", broken), ("c", gold), ("d", nacl), ("e", Atoms())]))
    assert [r.id for r in results] == ["a", "b", "c", "d", "e"]
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert "'b'" in results[1].error and "pos" in results[1].error
    assert "Au" in results[2].error and "not seen in training" in results[2].error
    warn = E3Relaxer(relaxer.model, relaxer.metadata, device="cpu", dtype=torch.float64, on_unknown_element="warn")
    with pytest.warns(UserWarning, match="Au"):
        assert warn.relax(gold).ok


def test_from_pretrained_names_what_it_cannot_find(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped model"):
        E3Relaxer.from_pretrained(str(tmp_path / "missing.ckpt"))
    assert E3Relaxer.from_pretrained("e3relax-small").metadata["release"]["name"] == "e3relax-small"
    assert RelaxResult("x", None, error="e")["error"] == "e"


def test_prebuilt_graphs_budgets_and_workers_change_nothing(relaxer):
    items = [(f"s{k}", s) for k, s in enumerate(structures() * 3)]
    arrays = [structure_arrays(s) for _, s in items]
    # the relaxer hands the model the reduced basis of each lattice (tests/test_basis.py)
    arrays = [(pos, z, reduce_basis(cell, pbc)[0], pbc) for pos, z, cell, pbc in arrays]
    batch = batch_from_arrays(arrays, dtype=torch.float64)
    with torch.no_grad():
        pos_layers, _ = relaxer.model(*batch.tensors())  # the graph built inside the model
    reference = list(relaxer.relax_many(items))
    for r, (a0, a1) in zip(reference, zip(batch.ptr[:-1].tolist(), batch.ptr[1:].tolist())):
        np.testing.assert_allclose(_positions(r.final_structure), pos_layers[-1, a0:a1].numpy(), atol=1e-12)
    for budget in (BatchBudget(max_edges=150, num_workers=2, window=2),
                   BatchBudget(max_edges=1, max_atoms=3, num_workers=3)):
        again = list(relaxer.relax_many(items, budget=budget))
        assert [r.id for r in again] == [r.id for r in reference]
        for a, b in zip(again, reference):
            np.testing.assert_allclose(_positions(a.final_structure), _positions(b.final_structure), atol=1e-12)


def _positions(structure):
    return structure.positions if isinstance(structure, Atoms) else structure.cart_coords


def test_a_failing_batch_is_split_until_the_culprit_alone_carries_the_error(relaxer, monkeypatch):
    forward = relaxer.model.forward
    calls = []

    def flaky(pos, z, cell, pbc, ptr, *graph):
        calls.append(len(ptr) - 1)
        if len(ptr) - 1 > 2:  # batches of three or more structures run out of memory
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if bool((z == 14).any()):  # and silicon breaks the model whatever the batch
            raise RuntimeError("kernel failure")
        return forward(pos, z, cell, pbc, ptr, *graph)

    monkeypatch.setattr(relaxer.model, "forward", flaky)
    cu, nacl, si = structures()
    items = [("cu", cu), ("nacl", nacl), ("si", si), ("cu2", cu.copy())]
    results = list(relaxer.relax_many(items))
    assert [r.id for r in results] == ["cu", "nacl", "si", "cu2"]
    assert [r.ok for r in results] == [True, True, False, True]
    assert "'si'" in results[2].error and "kernel failure" in results[2].error
    assert calls[0] == 4 and max(calls[1:]) <= 2


def test_out_of_memory_alone_is_reported_as_such(relaxer, monkeypatch):
    def no_memory(*args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(relaxer.model, "forward", no_memory)
    (result,) = relaxer.relax_many([("big", structures()[0])])
    assert "out of memory" in result.error and "'big'" in result.error and "2 atoms" in result.error


def test_tensor_entry_takes_numpy_without_a_copy_and_validates(relaxer):
    batch = batch_from_structures(structures(), dtype=torch.float64)
    arrays = [t.numpy() for t in batch.tensors()]
    pos_layers, cell_layers = relaxer.relax_tensors(*arrays)
    with torch.no_grad():
        expected = relaxer.model(*batch.tensors())
    torch.testing.assert_close(pos_layers, expected[0], rtol=0, atol=1e-12)
    assert torch.from_dlpack(arrays[0]).data_ptr() == arrays[0].ctypes.data  # DLPack shares the buffer
    bad = arrays[0].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="pos"):
        relaxer.relax_tensors(bad, *arrays[1:])


def test_refine_in_the_api_takes_a_calculator_or_a_factory(relaxer):
    from ase.calculators.emt import EMT

    cu = structures()[0]
    for refine in (EMT, EMT(), Refinement(EMT, fmax=0.05)):
        (result,) = relaxer.relax_many([("cu", cu)], refine=refine)
        assert result.refined.converged and result.refined.steps > 0
        assert isinstance(result.refined.structure, Atoms) and result.refined.structure is not result.final_structure
        assert np.abs(result.refined.structure.positions - result.final_structure.positions).max() > 0


def test_matmul_precision_is_checked_and_leaves_the_callers_model_alone(make_model):
    model = make_model(layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="matmul_precision must be one of float32, bfloat16"):
        E3Relaxer(model, device="cpu", dtype=torch.float64, matmul_precision="int8")
    reduced = E3Relaxer(model, device="cpu", dtype=torch.float64, matmul_precision="bfloat16")
    assert any(p.dtype == torch.bfloat16 for p in reduced.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was reduced
    result = reduced.relax(structures()[0])
    assert result.ok and np.isfinite(result.final_structure.positions).all()


def _collapse_second_structure(relaxer, monkeypatch):
    """Make the model put atom 1 of the second structure 0.8 Å from atom 0 (a learned model does this
    to unseen structure types), leaving the other structures as the model predicts them."""
    forward = relaxer.model.forward

    def collapsing(pos, z, cell, pbc, ptr, *graph):
        pos_layers, cell_layers = forward(pos, z, cell, pbc, ptr, *graph)
        pos_layers = pos_layers.clone()
        if len(ptr) > 2:
            first = int(ptr[1])
            pos_layers[-1, first + 1] = pos_layers[-1, first] + torch.tensor([0.8, 0.0, 0.0], dtype=pos.dtype)
        return pos_layers, cell_layers

    monkeypatch.setattr(relaxer.model, "forward", collapsing)


def test_a_prediction_that_pushes_atoms_together_gets_the_input_back_with_a_warning(relaxer, monkeypatch):
    cu, nacl, si = structures()
    _collapse_second_structure(relaxer, monkeypatch)
    plain = [relaxer.relax(s) for s in (cu, si)]  # alone: nothing collapses
    results = list(relaxer.relax_many([("cu", cu), ("nacl", nacl), ("si", si)]))
    assert [bool(r.warning) for r in results] == [False, True, False]
    flagged = results[1]
    assert "'nacl'" in flagged.warning and "0.80 Å apart" in flagged.warning and "returned the input" in flagged.warning
    assert flagged.confidence["shortest_distance_ratio"] < 0.6
    np.testing.assert_allclose(flagged.final_structure.cart_coords, nacl.cart_coords, atol=1e-12)
    np.testing.assert_allclose(flagged.final_structure.lattice.matrix, nacl.lattice.matrix, atol=1e-12)
    assert not np.allclose(flagged.trajectory[-1].cart_coords, nacl.cart_coords)  # the prediction is kept there
    for single, batched in zip(plain, (results[0], results[2])):
        assert 0.6 < batched.confidence["shortest_distance_ratio"] < 1.5
        np.testing.assert_allclose(batched.final_structure.positions, single.final_structure.positions, atol=1e-10)


def test_on_overlap_keep_returns_the_prediction_and_bad_settings_are_errors(make_model, tmp_path, monkeypatch):
    model = make_model(layers=2)
    relaxer = E3Relaxer(model, device="cpu", dtype=torch.float64, on_overlap="keep", max_volume_factor=float("inf"),
                         symprec=None)
    cu, nacl, si = structures()
    _collapse_second_structure(relaxer, monkeypatch)
    results = list(relaxer.relax_many([cu, nacl, si]))
    assert "kept (on_overlap='keep')" in results[1].warning
    assert results[1].final_structure is results[1].trajectory[-1]
    with pytest.raises(ValueError, match="on_overlap must be one of input, keep"):
        E3Relaxer(model, on_overlap="drop")
    with pytest.raises(ValueError, match="overlap_ratio must be in"):
        E3Relaxer(model, overlap_ratio=1.5)


def test_a_cell_compressed_to_half_is_refused_not_reported_ok():
    """Release 2 blew this cell up by a factor of 1.5e8 and called it ok; release 3's answer is not
    finite. Either way: refused, the input geometry back, never ok."""
    from ase.io import read

    atoms = read(Path(__file__).parent.parent / "examples" / "train-101-00023.cif")
    atoms.set_cell(atoms.cell * 0.5, scale_atoms=True)
    result = E3Relaxer.from_pretrained().relax(atoms)
    assert ("cell volume by a factor" in result.warning or "non-finite" in result.warning)
    assert "returned the input geometry" in result.warning
    np.testing.assert_allclose(result.final_structure.cell.array, atoms.cell.array)
    np.testing.assert_allclose(result.final_structure.positions, atoms.positions)


def test_non_finite_or_exploding_predictions_are_refused(relaxer, monkeypatch):
    relaxer.guards = dataclasses.replace(relaxer.guards, max_volume_factor=2.0)
    cu, nacl, si = structures()

    def broken(pos, z, cell, pbc, ptr, *graph):
        """Every layer returns the input (a model that does nothing), but for two structures."""
        pos_layers, cell_layers = pos.expand(2, -1, -1).clone(), cell.expand(2, -1, -1, -1).clone()
        pos_layers[-1, int(ptr[1])] = float("nan")  # second structure: a NaN position
        cell_layers[-1, 2] *= 1.5  # third: volume x 3.375
        return pos_layers, cell_layers

    monkeypatch.setattr(relaxer.model, "forward", broken)
    results = list(relaxer.relax_many([("cu", cu), ("nacl", nacl), ("si", si)]))
    assert results[0].warning == "" and results[0].ok
    assert "non-finite" in results[1].warning and "'nacl'" in results[1].warning
    assert "factor of 3.38" in results[2].warning and "returned the input geometry" in results[2].warning
    np.testing.assert_allclose(results[2].final_structure.cell.array, si.cell.array, atol=1e-12)
    with pytest.raises(ValueError, match="max_volume_factor must be above 1"):
        E3Relaxer(relaxer.model, max_volume_factor=0.5)


def test_coincident_atoms_are_an_error_naming_the_field(relaxer):
    cu, _, _ = structures()
    doubled = cu.copy()
    doubled.append(doubled[0])
    with pytest.raises(ValueError, match="'positions' puts two atoms 0 Å apart"):
        relaxer.relax(doubled, "doubled")
    (result,) = relaxer.relax_many([("doubled", doubled)])
    assert not result.ok and "coincident" in result.error


def test_a_cell_edge_below_physical_size_is_refused_and_the_report_says_refused(tmp_path):
    """H in a 0.5 Å cell came back 'ok' with a 0.44 Å edge: below MIN_PREDICTED_DISTANCE it is refused
    (raw predictions: the cubic symmetry imposed by default averages the edges back above the floor)."""
    from e3relax_fast.cli import main
    from e3relax_fast.relax import MIN_PREDICTED_DISTANCE

    hydrogen = Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 0.5, pbc=True)
    result = E3Relaxer.from_pretrained(symprec=None).relax(hydrogen)
    assert min(result.trajectory[-1].cell.lengths()) < MIN_PREDICTED_DISTANCE == 0.5
    assert result.refused and "below the physical floor of 0.5 Å" in result.warning
    np.testing.assert_array_equal(result.final_structure.cell[:], hydrogen.cell[:])
    hydrogen.write(tmp_path / "h.cif")
    code = main(["predict", "-i", str(tmp_path / "h.cif"), "-o", str(tmp_path / "out.extxyz"), "--symprec", "none",
                 "--no-progress"])
    assert code == 3  # nothing succeeded
    rows = list(csv.DictReader(open(tmp_path / "out_report.csv")))
    assert rows[0]["status"] == "refused" and "physical floor" in rows[0]["warning"]
