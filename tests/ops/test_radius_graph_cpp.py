"""The C++ radius-graph kernel: bit-identical to the reference, equal to vesin and ASE, deterministic."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from e3relax_fast.ops import backend_report, radius_graph
from e3relax_fast.testing import flat_batch, random_crystal

pytestmark = pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["radius_graph"])["cpp"],
    reason="op library built without the kernel (E3RELAX_BUILD=none); tests/ops/test_library.py "
           "fails unless that was asked for")


def both(args, *rest):
    ref = radius_graph(*args, *rest, backend="torch")
    cpp = radius_graph(*args, *rest, backend="cpp")
    return ref, cpp


def assert_identical(ref, cpp):
    for name, a, b in zip(("edge_index", "shifts", "counts"), ref, cpp):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(6))
def test_identical_to_the_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    crystals = [random_crystal(rng, int(rng.integers(1, 24)), skew=float(rng.uniform(0, 0.6)),
                               volume_per_atom=float(rng.uniform(5, 30)), wrapped=bool(seed % 2)) for _ in range(4)]
    pbc = (rng.random((4, 3)) < 0.75).tolist()
    pos, _, cell, pbc_t, ptr = flat_batch(crystals, pbc=pbc, dtype=dtype)
    for max_neighbors, self_images in [(0, "all"), (12, "all"), (50, "paper")]:
        assert_identical(*both((pos, cell, pbc_t, ptr), 5.0, max_neighbors, self_images))


def fcc(repeats: int, a: float = 3.6) -> tuple:
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(repeats)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    frac = ((grid + basis[None]) / repeats).reshape(-1, 3)
    cell = np.eye(3) * a * repeats
    return frac @ cell, np.ones(len(frac), dtype=np.int64), cell


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_perfect_lattice_shells_of_equal_distances(dtype):
    """Shells of 12-24 (nearly) equal distances take the kernel's rank sort; a simple cubic shell of 84
    exactly equal ones (|n|^2 = 50) its std::sort fallback. Both orders must be the reference's, and
    the cap must cut inside a shell by source, then shift."""
    pos, z, cell = fcc(3)
    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    cubic = (np.zeros((1, 3)), np.ones(1, dtype=np.int64), np.eye(3))
    crystals = [(pos, z, cell), (pos @ rotation.T, z, cell @ rotation.T), cubic]
    args = flat_batch(crystals, dtype=dtype)
    for cutoff, max_neighbors, self_images in [(6.0, 0, "all"), (6.0, 30, "all"), (6.0, 50, "paper")]:
        assert_identical(*both((args[0], *args[2:]), cutoff, max_neighbors, self_images))
    assert_identical(*both((args[0][-1:], args[2][-1:], args[3][-1:], torch.tensor([0, 1])), 7.2))


def test_positions_far_outside_the_cell():
    """Unwrapped positions hundreds of cells away: shifts beyond +-511 do not fit the rank sort's packed
    key, so the shells of this perfect lattice take the std::sort fallback; random atoms the plain path."""
    rng = np.random.default_rng(5)
    crystals = []
    for pos, z, cell in [fcc(2), random_crystal(rng, 12)]:
        # along one axis only, so that the brute-force reference's image range stays affordable
        away = np.stack([rng.integers(-300, 300, size=len(z)), np.zeros(len(z)), np.zeros(len(z))], axis=1)
        crystals.append((pos + away @ cell, z, cell))
    args = flat_batch(crystals)
    ref, cpp = both((args[0], *args[2:]), 6.0)
    assert_identical(ref, cpp)
    assert ref[1].abs().max() > 511


def test_atoms_exactly_on_cell_faces():
    cell = np.array([[3.1, 0.0, 0.0], [0.4, 2.9, 0.0], [0.2, 0.3, 3.3]])
    frac = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.5], [-1e-17, 1.0 - 1e-16, 0.25], [0.5, 1.0, 1.0], [-0.0, 0.5, 1e-300]])
    pos = frac @ cell
    args = flat_batch([(pos, np.ones(5, dtype=np.int64), cell)])
    ref, cpp = both((args[0], *args[2:]), 4.5)
    assert_identical(ref, cpp)
    i, j, shift = neighbor_list("ijS", Atoms(positions=pos, cell=cell, pbc=True), 4.5)
    ase = {(int(a), int(b), tuple(s)) for a, b, s in zip(i, j, shift.tolist())}
    ours = {(int(t), int(s), tuple(sh)) for s, t, sh in zip(cpp[0][0], cpp[0][1], cpp[1].tolist())}
    assert ours == ase


def test_supercell_matches_vesin():
    vesin = pytest.importorskip("vesin")
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    cell = np.array([[36.0, 0.0, 0.0], [3.0, 35.0, 0.0], [1.0, -2.0, 37.0]])
    pos = (((grid + basis[None]) / 10).reshape(-1, 3)) @ cell
    pos += np.random.default_rng(0).normal(scale=0.05, size=pos.shape)
    args = flat_batch([(pos, np.ones(len(pos), dtype=np.int64), cell)])
    edge_index, shifts, counts = radius_graph(args[0], *args[2:], 6.0, backend="cpp")
    i, j, shift, dist = vesin.NeighborList(cutoff=6.0, full_list=True).compute(pos, cell, True, "ijSd")
    theirs = {(int(a), int(b), tuple(s)): d for a, b, s, d in zip(i, j, shift.tolist(), dist)}
    r = args[0][edge_index[0]] + shifts.double() @ args[2][0] - args[0][edge_index[1]]
    ours = {(int(t), int(s), tuple(sh)): float(d)
            for s, t, sh, d in zip(edge_index[0], edge_index[1], shifts.tolist(), r.norm(dim=1))}
    assert ours.keys() == theirs.keys() and len(ours) == int(counts.sum()) > 100_000
    assert max(abs(d - theirs[k]) for k, d in ours.items()) < 1e-10


def test_same_output_for_any_thread_count_and_run():
    rng = np.random.default_rng(7)
    pos, _, cell, pbc, ptr = flat_batch([random_crystal(rng, int(rng.integers(4, 64))) for _ in range(30)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = radius_graph(pos, cell, pbc, ptr, 6.0, 50, "paper", backend="cpp")
        torch.set_num_threads(max(2, threads))
        runs = [radius_graph(pos, cell, pbc, ptr, 6.0, 50, "paper", backend="cpp") for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for run in runs:
        assert_identical(single, run)


def test_opcheck():
    rng = np.random.default_rng(3)
    pos, _, cell, pbc, ptr = flat_batch([random_crystal(rng, 5), random_crystal(rng, 3)], pbc=[[True] * 3, [True, False, True]])
    for dtype in (torch.float64, torch.float32):
        torch.library.opcheck(torch.ops.e3relax.radius_graph_pbc.default,
                              (pos.to(dtype), cell.to(dtype), pbc, ptr, 5.0, 10, 1))


class TestBadInputInTheKernel:
    """The op checks its input itself, for callers that bypass Python (TorchScript, C++)."""

    def args(self):
        rng = np.random.default_rng(0)
        pos, _, cell, pbc, ptr = flat_batch([random_crystal(rng, 3), random_crystal(rng, 4)])
        return pos, cell, pbc, ptr

    def test_singular_cell(self):
        pos, cell, pbc, ptr = self.args()
        cell[1, 2] = cell[1, 0]
        with pytest.raises(ValueError, match="structure 1: field 'cell' is singular"):
            torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, 5.0, 0, 0)

    def test_cell_far_too_small(self):
        pos, cell, pbc, ptr = self.args()
        cell[0] = torch.eye(3, dtype=cell.dtype) * 0.01
        with pytest.raises(ValueError, match="structure 0: field 'cell' is too small for cutoff"):
            torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, 5.0, 0, 0)

    def test_nan_and_bad_arguments(self):
        pos, cell, pbc, ptr = self.args()
        with pytest.raises(ValueError, match="cutoff must be positive"):
            torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, 0.0, 0, 0)
        with pytest.raises(ValueError, match="'ptr' ends at 5 but 'pos' has 7"):
            torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, torch.tensor([0, 3, 5]), 5.0, 0, 0)
        pos[0, 0] = float("nan")
        with pytest.raises(ValueError, match="'pos' is not finite"):
            torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, 5.0, 0, 0)
