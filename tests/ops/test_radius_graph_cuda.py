"""The CUDA radius graph against the reference (run where a GPU and a CUDA build exist; the same
per-target code runs on every machine in test_radius_graph_targets.py)."""

import numpy as np
import pytest
import torch

from e3relax_fast.ops import backend_report, radius_graph
from e3relax_fast.testing import flat_batch, random_crystal

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not dict((e.backend, e.available) for e in backend_report()["radius_graph"])["cuda"],
    reason="needs a CUDA device and a CUDA build of the op library")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kwargs", [{}, {"max_neighbors": 50, "self_images": "paper"}])
def test_identical_to_the_reference(dtype, kwargs):
    rng = np.random.default_rng(0)
    pos, z, cell, pbc, ptr = flat_batch([random_crystal(rng, int(n)) for n in rng.integers(1, 40, 50)], dtype=dtype)
    ref = radius_graph(pos, cell, pbc, ptr, 6.0, backend="torch", **kwargs)
    ours = radius_graph(pos.cuda(), cell.cuda(), pbc.cuda(), ptr.cuda(), 6.0, backend="cuda", **kwargs)
    for a, b in zip(ref, ours):
        assert torch.equal(a, b.cpu())


def test_large_supercell_equals_the_cpu_kernel():
    """The cell lists keep the GPU linear in atoms: a 32,000-atom FCC cell, perturbed."""
    rng = np.random.default_rng(1)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    cell = np.eye(3) * 72.0
    pos = ((grid + basis[None]) / 20).reshape(-1, 3) @ cell + rng.normal(scale=0.05, size=(32000, 3))
    pos, _, cell_t, pbc, ptr = flat_batch([(pos, np.ones(len(pos), dtype=np.int64), cell)])
    cpu = radius_graph(pos, cell_t, pbc, ptr, 6.0, 50, "paper", backend="cpp")
    gpu = radius_graph(pos.cuda(), cell_t.cuda(), pbc.cuda(), ptr.cuda(), 6.0, 50, "paper", backend="cuda")
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())
