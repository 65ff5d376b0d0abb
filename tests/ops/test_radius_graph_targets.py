"""The per-target radius-graph code that the CUDA kernel runs, exercised on the CPU through the harness op
of the test-only library (e3relax_testing::radius_graph_targets, csrc/testing/): identical to the reference (edges, order, shifts, counts) on the cases that
matter, in float32 and float64."""

import numpy as np
import pytest
import torch

from e3relax_fast.ops import radius_graph
from e3relax_fast.testing import flat_batch, load_testing_ops, random_crystal

pytestmark = pytest.mark.skipif(
    not load_testing_ops(),
    reason="op libraries not built (E3RELAX_BUILD=none); tests/ops/test_library.py fails unless asked for")


def targets(pos, cell, pbc, ptr, cutoff, max_neighbors=0, self_images="all"):
    mode = {"all": 0, "paper": 1}[self_images]
    return torch.ops.e3relax_testing.radius_graph_targets(pos, cell, pbc, ptr, cutoff, max_neighbors, mode)


def assert_same(args, **kwargs):
    ref = radius_graph(*args, backend="torch", **kwargs)
    ours = targets(*args, **kwargs)
    for name, a, b in zip(("edge_index", "shifts", "counts"), ref, ours):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(4))
def test_batches_of_random_crystals(seed, dtype):
    rng = np.random.default_rng(seed)
    crystals = [random_crystal(rng, int(n)) for n in rng.integers(1, 12, 5)]
    pos, z, cell, pbc, ptr = flat_batch(crystals, dtype=dtype)
    assert_same((pos, cell, pbc, ptr), cutoff=5.0)
    assert_same((pos, cell, pbc, ptr), cutoff=6.0, max_neighbors=12, self_images="paper")


def test_short_lattice_vector_partial_pbc_and_atoms_outside_the_cell():
    rng = np.random.default_rng(9)
    pos, z, cell = random_crystal(rng, 3)
    cell = cell.copy()
    cell[2] *= 0.35  # far shorter than the cutoff: several image layers
    pos = pos + cell[0] * 1.7  # unwrapped positions
    batch = flat_batch([(pos, z, cell), (pos, z, cell)], pbc=[[True, True, True], [True, False, True]])
    assert_same((batch[0], batch[2], batch[3], batch[4]), cutoff=4.0)
    assert_same((batch[0], batch[2], batch[3], batch[4]), cutoff=4.0, max_neighbors=5, self_images="paper")


def test_single_atoms_and_empty_structures():
    cell = np.eye(3) * 2.5
    batch = flat_batch([(np.zeros((1, 3)), np.array([1]), cell), (np.zeros((0, 3)), np.zeros(0, int), cell),
                        (np.array([[0.1, 0.2, 0.3]]), np.array([8]), cell * 1.3)])
    assert_same((batch[0], batch[2], batch[3], batch[4]), cutoff=3.0)
    assert_same((batch[0], batch[2], batch[3], batch[4]), cutoff=3.0, max_neighbors=3, self_images="paper")


def test_equal_to_the_cell_list_kernel_on_a_larger_batch():
    rng = np.random.default_rng(21)
    pos, z, cell, pbc, ptr = flat_batch([random_crystal(rng, int(n)) for n in rng.integers(4, 40, 20)])
    cpp = radius_graph(pos, cell, pbc, ptr, 6.0, 50, "paper", backend="cpp")
    ours = targets(pos, cell, pbc, ptr, 6.0, 50, "paper")
    assert all(torch.equal(a, b) for a, b in zip(cpp, ours))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_lists_on_a_supercell_and_sparse_or_open_boxes(dtype):
    """Cases the cell lists must get right beyond small crystals: a perturbed 864-atom supercell (many
    bins), a few atoms in a 60 Å box (the sparse-box coarsening), a cluster with no periodic axis, and
    atoms far outside their cell; equal to the CPU kernel, which equals the reference."""
    rng = np.random.default_rng(4)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    cell = np.array([[21.6, 0.0, 0.0], [1.5, 21.0, 0.0], [0.5, -1.0, 22.0]])
    supercell = (((grid + basis[None]) / 6).reshape(-1, 3) @ cell + rng.normal(scale=0.05, size=(864, 3)))
    sparse = rng.uniform(0, 60, size=(3, 3))
    cluster = rng.normal(scale=3.0, size=(20, 3))
    far_pos, far_z, far_cell = random_crystal(rng, 8)
    far_pos = far_pos + rng.integers(-40, 40, size=(8, 3)) @ far_cell
    crystals = [(supercell, np.ones(864, dtype=np.int64), cell), (sparse, np.ones(3, dtype=np.int64), np.eye(3) * 60),
                (cluster, np.ones(20, dtype=np.int64), np.eye(3) * 10), (far_pos, far_z, far_cell)]
    pos, _, cell_t, pbc, ptr = flat_batch(crystals, pbc=[[True] * 3, [True] * 3, [False] * 3, [True, True, False]],
                                          dtype=dtype)
    for max_neighbors, self_images in [(0, "all"), (50, "paper")]:
        cpp = radius_graph(pos, cell_t, pbc, ptr, 6.0, max_neighbors, self_images, backend="cpp")
        ours = targets(pos, cell_t, pbc, ptr, 6.0, max_neighbors, self_images)
        assert all(torch.equal(a, b) for a, b in zip(cpp, ours))
    assert int(cpp[2][0]) > 864 * 50


def test_too_small_cell_is_refused_naming_the_structure():
    batch = flat_batch([(np.zeros((1, 3)), np.array([1]), np.eye(3) * 3.0),
                        (np.zeros((1, 3)), np.array([1]), np.diag([3.0, 3.0, 0.001]))])
    with pytest.raises(ValueError, match="structure 1: field 'cell' is too small"):
        targets(batch[0], batch[2], batch[3], batch[4], 6.0)


def bad_batch(field):
    pos, z, cell, pbc, ptr = flat_batch([(np.zeros((2, 3)) + [[0, 0, 0], [1, 1, 1]], np.array([1, 1]), np.eye(3) * 4.0),
                                         (np.ones((1, 3)), np.array([1]), np.eye(3) * 5.0)])
    if field == "nan pos":
        pos[1, 0] = float("nan")
    elif field == "inf cell":
        cell[0, 2, 2] = float("inf")
    elif field == "singular cell":
        cell[1, 2] = cell[1, 0]
    elif field == "ptr start":
        ptr = torch.tensor([1, 2, 3])
    elif field == "ptr end":
        ptr = torch.tensor([0, 2, 4])
    elif field == "ptr decreases":
        ptr = torch.tensor([0, 3, 2, 3])
        cell, pbc = torch.cat([cell, cell[:1]]), torch.cat([pbc, pbc[:1]])
    return pos, cell, pbc, ptr


@pytest.mark.parametrize("field, message", [("nan pos", "field 'pos' is not finite"),
                                            ("inf cell", "field 'cell' is not finite"),
                                            ("singular cell", "structure 1: field 'cell' is singular"),
                                            ("ptr start", "field 'ptr' must start at 0"),
                                            ("ptr end", "field 'ptr' must end at the number of atoms"),
                                            ("ptr decreases", "structure 1: field 'ptr' decreases")])
def test_bad_data_is_refused_by_the_shared_device_checks(field, message):
    # the checks the CUDA kernel runs on the device, before it sizes anything from the data
    with pytest.raises(ValueError, match=message):
        targets(*bad_batch(field), 6.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_cap_keeps_whole_shells_as_the_reference_does(dtype):
    """Rock salt, jittered by 1e-6 Å: caps of 6, 8 and 20 end inside or at the edge of a shell."""
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    pos = atoms.positions + 1e-6 * np.random.default_rng(3).standard_normal(atoms.positions.shape)
    args = flat_batch([(pos, atoms.numbers, atoms.cell[:])], dtype=dtype)
    for cap in (6, 8, 20):
        assert_same((args[0], args[2], args[3], args[4]), cutoff=6.0, max_neighbors=cap, self_images="paper")
