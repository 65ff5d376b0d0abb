"""The reference radius graph against ASE, and its conventions: order, caps, presets, errors."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from e3relax_fast.ops import edge_vectors, radius_graph, radius_graph_reference
from e3relax_fast.ops.geometry import atom_structure_index
from e3relax_fast.testing import flat_batch, random_crystal

CUTOFF = 4.0


def ase_edges(pos, cell, pbc, cutoff):
    atoms = Atoms(numbers=np.ones(len(pos), dtype=int), positions=pos, cell=cell, pbc=pbc)
    i, j, shift, dist = neighbor_list("ijSd", atoms, cutoff, self_interaction=False)
    return {(int(a), int(b), tuple(int(s) for s in sh)): float(d) for a, b, sh, d in zip(i, j, shift, dist)}


def our_edges(pos, cell, pbc, cutoff, **kwargs):
    p, z, c, b, ptr = flat_batch([(pos, np.ones(len(pos), dtype=np.int64), cell)], pbc=[pbc])
    edge_index, shifts, counts = radius_graph(p, c, b, ptr, cutoff, backend="torch", **kwargs)
    r = edge_vectors(p, c, edge_index, shifts, torch.zeros(edge_index.shape[1], dtype=torch.long))
    assert int(counts.sum()) == edge_index.shape[1]
    return {(int(i), int(j), tuple(int(s) for s in sh)): float(d)
            for j, i, sh, d in zip(edge_index[0], edge_index[1], shifts, r.norm(dim=1))}


def assert_same_as_ase(pos, cell, pbc, cutoff=CUTOFF):
    ours, theirs = our_edges(pos, cell, pbc, cutoff), ase_edges(pos, cell, pbc, cutoff)
    assert ours.keys() == theirs.keys()
    assert len(ours) > 0
    for key, d in ours.items():
        assert abs(d - theirs[key]) < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_random_triclinic_cells_match_ase(seed):
    rng = np.random.default_rng(seed)
    pos, _, cell = random_crystal(rng, int(rng.integers(2, 12)), skew=0.3)
    assert_same_as_ase(pos, cell, [True, True, True])


def test_very_skewed_cell_matches_ase(rng):
    cell = np.array([[3.0, 0.0, 0.0], [2.8, 1.0, 0.0], [2.9, 0.9, 1.2]])
    pos = rng.uniform(0, 1, size=(5, 3)) @ cell
    assert_same_as_ase(pos, cell, [True, True, True])


def test_lattice_vector_far_shorter_than_cutoff_matches_ase(rng):
    cell = np.array([[0.9, 0.0, 0.0], [0.3, 5.0, 0.0], [0.1, 0.4, 6.0]])
    pos = rng.uniform(0, 1, size=(3, 3)) @ cell
    assert_same_as_ase(pos, cell, [True, True, True])


@pytest.mark.parametrize("pbc", [[True, False, True], [False, False, True], [False, False, False]])
def test_partial_pbc_matches_ase(rng, pbc):
    pos, _, cell = random_crystal(rng, 8, volume_per_atom=6.0)
    assert_same_as_ase(pos, cell, pbc)


def test_one_atom_cell_has_only_its_own_images(rng):
    cell = np.diag([2.0, 2.5, 3.0])
    edges = our_edges(np.zeros((1, 3)), cell, [True] * 3, CUTOFF)
    assert edges.keys() == ase_edges(np.zeros((1, 3)), cell, [True] * 3, CUTOFF).keys()
    assert all(i == j == 0 for i, j, _ in edges)
    assert (0, 0, (0, 0, 0)) not in edges


def test_atoms_outside_the_cell_match_ase(rng):
    pos, _, cell = random_crystal(rng, 6, wrapped=False)
    assert_same_as_ase(pos, cell, [True, True, True])


def test_pair_at_exactly_the_cutoff_is_excluded():
    cell = np.diag([10.0, 10.0, 10.0])
    pos = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert our_edges(pos, cell, [False] * 3, 3.0) == {}
    assert len(our_edges(pos, cell, [False] * 3, 3.0 + 1e-9)) == 2


def test_output_is_sorted_by_target_then_distance_then_source(rng):
    pos, z, cell = random_crystal(rng, 10)
    p, z, c, b, ptr = flat_batch([(pos, z, cell)])
    edge_index, shifts, _ = radius_graph_reference(p, c, b, ptr, 5.0)
    d = edge_vectors(p, c, edge_index, shifts, torch.zeros(shifts.shape[0], dtype=torch.long)).norm(dim=1)
    target = edge_index[1]
    assert (target[1:] >= target[:-1]).all()
    same = target[1:] == target[:-1]
    assert (d[1:][same] >= d[:-1][same] - 1e-12).all()


def test_max_neighbors_keeps_whole_shells_in_a_deterministic_order():
    # Simple cubic, one atom: 6 neighbours at a, 12 at sqrt(2) a. A cap of 8 cuts through the second
    # shell, so all of it is kept; a cap of 6 ends with the first. Ties broken by source, then shift.
    cell = np.eye(3) * 2.0
    p, z, c, b, ptr = flat_batch([(np.zeros((1, 3)), np.ones(1, dtype=np.int64), cell)])
    edge_index, shifts, counts = radius_graph_reference(p, c, b, ptr, 3.0, max_neighbors=8)
    assert counts.tolist() == [18]
    assert radius_graph_reference(p, c, b, ptr, 3.0, max_neighbors=6)[2].tolist() == [6]
    expected_first_six = sorted(tuple(s) for s in (np.eye(3, dtype=int).tolist() + (-np.eye(3, dtype=int)).tolist()))
    assert [tuple(s) for s in shifts[:6].tolist()] == expected_first_six
    full_index, full_shifts, _ = radius_graph_reference(p, c, b, ptr, 3.0)
    assert torch.equal(shifts, full_shifts[:18])


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_a_jitter_of_a_micro_angstrom_changes_no_edge_under_the_cap(backend, rng):
    """Rock salt (8 atoms): a cap of 8 cuts through the 12-atom second shell. Without the shell rule a
    1e-6 Å jitter reorders that shell and swaps which neighbours are kept."""
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    graphs = []
    for jitter in (0.0, 1e-6):
        pos = atoms.positions + jitter * rng.standard_normal(atoms.positions.shape)
        p, z, c, b, ptr = flat_batch([(pos, atoms.numbers, atoms.cell[:])])
        edge_index, shifts, _ = radius_graph(p, c, b, ptr, 6.0, max_neighbors=8, backend=backend)
        graphs.append({(int(j), int(i), *map(int, s)) for (j, i), s in zip(edge_index.T, shifts)})
    assert len(graphs[0]) == 8 * (6 + 12) and graphs[0] == graphs[1]


def test_max_neighbors_caps_each_target(rng):
    pos, z, cell = random_crystal(rng, 12)
    p, z, c, b, ptr = flat_batch([(pos, z, cell)])
    full_index, full_shifts, _ = radius_graph_reference(p, c, b, ptr, 6.0)
    capped_index, capped_shifts, _ = radius_graph_reference(p, c, b, ptr, 6.0, max_neighbors=10)
    for atom in range(12):
        full_rows = (full_index[1] == atom).nonzero().flatten()[:10]
        rows = (capped_index[1] == atom).nonzero().flatten()
        assert torch.equal(full_index[:, full_rows], capped_index[:, rows])
        assert torch.equal(full_shifts[full_rows], capped_shifts[rows])


def test_paper_preset_replaces_self_images_by_six_fixed_shifts(rng):
    pos, z, cell = random_crystal(rng, 4, volume_per_atom=8.0)
    p, z, c, b, ptr = flat_batch([(pos, z, cell)])
    edge_index, shifts, _ = radius_graph_reference(p, c, b, ptr, 6.0, max_neighbors=50, self_images="paper")
    fixed = {(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)}
    for atom in range(4):
        own = (edge_index[0] == atom) & (edge_index[1] == atom)
        assert {tuple(s) for s in shifts[own].tolist()} == fixed
        assert int(own.sum()) == 6
    other_index, _, _ = radius_graph_reference(p, c, b, ptr, 6.0, max_neighbors=50)
    non_self = other_index[0] != other_index[1]
    assert int((edge_index[0] != edge_index[1]).sum()) == int(non_self.sum())


def test_paper_preset_adds_only_periodic_self_shifts():
    cell = np.eye(3) * 3.0
    p, z, c, b, ptr = flat_batch([(np.zeros((1, 3)), np.ones(1, dtype=np.int64), cell)], pbc=[[True, True, False]])
    _, shifts, _ = radius_graph_reference(p, c, b, ptr, 6.0, self_images="paper")
    assert {tuple(s) for s in shifts.tolist()} == {(0, 1, 0), (1, 0, 0), (1, 1, 0)}


def test_batch_equals_structures_alone(rng):
    crystals = [random_crystal(rng, n) for n in (3, 1, 7)]
    p, z, c, b, ptr = flat_batch(crystals, pbc=[[True] * 3, [True] * 3, [True, False, True]])
    edge_index, shifts, counts = radius_graph_reference(p, c, b, ptr, 5.0, max_neighbors=20, self_images="paper")
    start = 0
    for k, crystal in enumerate(crystals):
        pk, zk, ck, bk, ptrk = flat_batch([crystal], pbc=[b[k].tolist()])
        ek, sk, nk = radius_graph_reference(pk, ck, bk, ptrk, 5.0, max_neighbors=20, self_images="paper")
        rows = slice(start, start + int(counts[k]))
        assert torch.equal(edge_index[:, rows] - int(ptr[k]), ek)
        assert torch.equal(shifts[rows], sk)
        start += int(counts[k])
    assert start == edge_index.shape[1]


def test_isolated_atoms_have_no_edges():
    cell = np.eye(3) * 20.0
    pos = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    p, z, c, b, ptr = flat_batch([(pos, np.ones(2, dtype=np.int64), cell)])
    edge_index, shifts, counts = radius_graph_reference(p, c, b, ptr, 6.0)
    assert edge_index.shape == (2, 0) and shifts.shape == (0, 3) and counts.tolist() == [0]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_reference_matches_eager(rng):
    pos, z, cell = random_crystal(rng, 6)
    args = flat_batch([(pos, z, cell)])
    scripted = torch.jit.script(radius_graph_reference)
    for a, b in zip(scripted(args[0], *args[2:], 5.0, 10, "paper"), radius_graph_reference(args[0], *args[2:], 5.0, 10, "paper")):
        assert torch.equal(a, b)


def test_edge_vectors_are_differentiable_in_pos_and_cell(rng):
    pos, z, cell = random_crystal(rng, 3)
    p, z, c, b, ptr = flat_batch([(pos, z, cell)])
    edge_index, shifts, _ = radius_graph_reference(p, c, b, ptr, 4.0)
    structure = atom_structure_index(ptr, 3).index_select(0, edge_index[1])
    p.requires_grad_(True)
    c.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, c: edge_vectors(p, c, edge_index, shifts, structure), (p, c))


class TestBadInput:
    def batch(self, rng):
        crystals = [random_crystal(rng, 3), random_crystal(rng, 4)]
        return list(flat_batch(crystals))

    def test_nan_position_names_structure_and_field(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        pos[5, 1] = float("nan")
        with pytest.raises(ValueError, match=r"structure 1: field 'pos' is not finite at atom 2"):
            radius_graph(pos, cell, pbc, ptr, 5.0)

    def test_inf_cell(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        cell[0, 2, 2] = float("inf")
        with pytest.raises(ValueError, match=r"structure 0: field 'cell' is not finite"):
            radius_graph(pos, cell, pbc, ptr, 5.0)

    def test_singular_cell(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        cell[1, 2] = cell[1, 0] + cell[1, 1]
        with pytest.raises(ValueError, match=r"structure 1: field 'cell' is singular"):
            radius_graph(pos, cell, pbc, ptr, 5.0)

    def test_ptr_inconsistent_with_pos(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        with pytest.raises(ValueError, match=r"field 'ptr' ends at 6 but 'pos' has 7 atoms"):
            radius_graph(pos, cell, pbc, torch.tensor([0, 3, 6]), 5.0)
        with pytest.raises(ValueError, match=r"structure 1: field 'ptr' decreases"):
            radius_graph(pos, cell, pbc, torch.tensor([0, 8, 7]), 5.0)

    def test_negative_cutoff(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        with pytest.raises(ValueError, match="cutoff must be positive"):
            radius_graph(pos, cell, pbc, ptr, -1.0)

    def test_cell_far_too_small_for_the_cutoff(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        cell[1] = torch.diag(torch.tensor([0.01, 0.02, 0.05], dtype=cell.dtype))
        with pytest.raises(ValueError, match=r"structure 1: field 'cell' is too small for cutoff"):
            radius_graph(pos, cell, pbc, ptr, 5.0)

    def test_unavailable_backend_says_why(self, rng):
        pos, z, cell, pbc, ptr = self.batch(rng)
        with pytest.raises(RuntimeError, match="backend 'cuda' for radius_graph is unavailable: .+"):
            radius_graph(pos, cell, pbc, ptr, 5.0, backend="cuda")
        with pytest.raises(ValueError, match="backend must be one of"):
            radius_graph(pos, cell, pbc, ptr, 5.0, backend="fortran")
