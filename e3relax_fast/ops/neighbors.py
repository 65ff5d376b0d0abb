"""``neighbors``: the periodic radius graph of one structure for numpy callers.

For data-loader workers and other code that never touches torch tensors: numpy in, numpy out, through
the pybind11 module ``e3relax_fast._neighbors``, which runs the compiled ``radius_graph_pbc`` kernel with
the GIL released, so threads can build graphs in parallel. Without that module (no compiled build) the
same numbers come from the PyTorch reference, holding the GIL.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from . import _library
from .functional import radius_graph
from .radius_graph import self_image_mode


def compiled_binding():
    """The compiled numpy binding ``e3relax_fast._neighbors`` (GIL released), or None when the op library
    is not loaded or the binding was not built."""
    if not _library.status().loaded:
        return None
    try:
        return importlib.import_module("e3relax_fast._neighbors")
    except ImportError:
        return None


def neighbors(positions, cell, pbc=(True, True, True), cutoff: float = 6.0, max_neighbors: int = 0,
              self_images: str = "all", threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All periodic neighbours within ``cutoff`` Å.

    Args:
        positions: (n, 3) Cartesian positions, Å. cell: (3, 3), lattice vectors as rows, Å.
        pbc: 3 booleans. max_neighbors: keep the nearest per atom (0: all). self_images: "all" or "paper".
        threads: OpenMP threads for this call (0: torch's setting). Worker threads that build graphs
            beside a running model pass 1, so that they do not compete with it for its cores.

    Returns:
        ``edge_index`` (2, E) int64 (row 0 source j, row 1 target i), ``shifts`` (E, 3) int64 and
        ``distances`` (E,) float64 Å, with ``|positions[j] + shifts @ cell - positions[i]|`` = distance;
        sorted by target, then distance (the conventions of ``e3relax_fast.ops.radius_graph``).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.ascontiguousarray(pbc, dtype=bool)
    if pbc.shape == (3,) and not pbc.any() and cell.shape == (3, 3) and positions.ndim == 2 and len(positions) \
            and abs(np.linalg.det(cell)) < 1e-12:
        # a molecule with no cell: the kernels bin atoms by the cell, so give them a box that holds the
        # atoms (shifted to start at 0: distances do not change, and shifts are zero without periodicity)
        positions = np.ascontiguousarray(positions - positions.min(axis=0))
        cell = np.diag(np.ptp(positions, axis=0) + float(cutoff) + 1.0)
    binding = compiled_binding()
    if binding is not None:
        return binding.neighbors(positions, cell, pbc, float(cutoff), int(max_neighbors), self_image_mode(self_images),
                                 int(threads))
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError("neighbors: field 'positions' must have shape (n, 3)")
    if cell.shape != (3, 3):
        raise ValueError("neighbors: field 'cell' must have shape (3, 3) (lattice vectors as rows)")
    if pbc.shape != (3,):
        raise ValueError("neighbors: field 'pbc' must have 3 entries")
    pos_t, cell_t = torch.from_numpy(positions), torch.from_numpy(cell)
    edge_index, shifts, _ = radius_graph(pos_t, cell_t[None], torch.from_numpy(pbc)[None],
                                         torch.tensor([0, len(positions)]), float(cutoff), int(max_neighbors),
                                         self_images, backend="torch")
    r = pos_t[edge_index[0]] + shifts.double() @ cell_t - pos_t[edge_index[1]]
    return edge_index.numpy(), shifts.numpy(), r.norm(dim=1).numpy()
