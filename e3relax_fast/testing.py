"""Random crystals and batch helpers for tests and benchmarks (deterministic given a seed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .data import batch_from_arrays
from .ops import atom_structure_index


def random_cell(rng: np.random.Generator, volume: float, skew: float = 0.3) -> np.ndarray:
    """A right-handed [3, 3] cell (rows are lattice vectors, Å) of the given volume.

    ``skew`` is the size of the random off-diagonal part relative to the diagonal.
    """
    while True:
        cell = np.eye(3) + skew * rng.uniform(-1.0, 1.0, size=(3, 3))
        cell *= rng.uniform(0.8, 1.25, size=(3, 1))
        det = np.linalg.det(cell)
        if det > 0.2 * np.prod(np.linalg.norm(cell, axis=1)):
            return cell * (volume / det) ** (1.0 / 3.0)


def random_crystal(rng: np.random.Generator, num_atoms: int, volume_per_atom: float = 15.0,
                   skew: float = 0.3, elements: Sequence[int] = (1, 6, 8, 14, 26, 29, 79),
                   wrapped: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pos [n, 3], z [n], cell [3, 3])``: atoms at random fractional positions of a random cell.

    With ``wrapped=False`` atoms may sit up to one cell outside the box, as unwrapped data do.
    """
    cell = random_cell(rng, volume_per_atom * num_atoms, skew)
    low, high = (0.0, 1.0) if wrapped else (-1.0, 2.0)
    frac = rng.uniform(low, high, size=(num_atoms, 3))
    z = rng.choice(np.asarray(elements), size=num_atoms)
    return frac @ cell, z.astype(np.int64), cell


def flat_batch(crystals: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
               pbc: Sequence[Sequence[bool]] | None = None,
               dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(pos, z, cell, pbc, ptr)`` of a list of ``(pos, z, cell)`` crystals (periodic unless given), by
    :func:`e3relax_fast.data.batch_from_arrays` unchecked (tests feed it broken crystals on purpose)."""
    flags = [(True, True, True)] * len(crystals) if pbc is None else pbc
    arrays = [(p, z, c, np.asarray(f, dtype=bool)) for (p, z, c), f in zip(crystals, flags)]
    return batch_from_arrays(arrays, dtype=dtype, validate=False).tensors()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix [3, 3]."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# --- Equivariance checks --------------------------------------------------------------------------
# Each returns the largest deviation (Å) of the model's layer outputs from what the symmetry predicts,
# over every layer; a correct model gives rounding (~1e-12 in float64). ``model`` maps a flat batch
# ``(pos, z, cell, pbc, ptr)`` to ``(pos_layers [L,N,3], cell_layers [L,B,3,3])`` as E3Relax does.

Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def _layers(model, batch: Batch) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return model(*batch)


def _largest(*differences: Tensor) -> float:
    return max(float(d.abs().max()) for d in differences)


def rotation_error(model, batch: Batch, rotation: np.ndarray) -> float:
    """Rotating the input (positions and cell rows) must rotate every layer's positions and cell."""
    pos, z, cell, pbc, ptr = batch
    r = torch.from_numpy(rotation).to(pos.dtype)
    pos_layers, cell_layers = _layers(model, batch)
    pos_rot, cell_rot = _layers(model, (pos @ r.T, z, cell @ r.T, pbc, ptr))
    return _largest(pos_rot - pos_layers @ r.T, cell_rot - cell_layers @ r.T)


def translation_error(model, batch: Batch, shift: np.ndarray, affine: bool = True) -> float:
    """Translating every atom by ``shift`` [3] (Å) keeps every cell and moves every layer's atoms by
    the same fractional shift, ``shift L^-1 L_layer`` (affine position updates), or by ``shift``
    itself (Cartesian updates)."""
    pos, z, cell, pbc, ptr = batch
    t = torch.as_tensor(shift, dtype=pos.dtype)
    pos_layers, cell_layers = _layers(model, batch)
    pos_moved, cell_moved = _layers(model, (pos + t, z, cell, pbc, ptr))
    if affine:
        structure = atom_structure_index(ptr, len(z))
        fractional = torch.linalg.solve(cell[structure].transpose(1, 2), t.expand(len(z), 3).unsqueeze(2))
        expected = (cell_layers[:, structure].transpose(2, 3) @ fractional).squeeze(3)
    else:
        expected = t
    return _largest(pos_moved - pos_layers - expected, cell_moved - cell_layers)


def permutation_error(model, crystal: tuple[np.ndarray, np.ndarray, np.ndarray], permutation: np.ndarray) -> float:
    """Permuting the atoms of one crystal must permute the atoms of every layer and keep the cell."""
    pos, z, cell = crystal
    pos_layers, cell_layers = _layers(model, flat_batch([crystal]))
    pos_perm, cell_perm = _layers(model, flat_batch([(pos[permutation], z[permutation], cell)]))
    return _largest(pos_perm - pos_layers[:, torch.from_numpy(permutation)], cell_perm - cell_layers)


def periodic_image_error(model, crystal: tuple[np.ndarray, np.ndarray, np.ndarray], atom: int,
                         combination: Sequence[int]) -> float:
    """Giving ``atom`` in another periodic image, ``n L`` with integers ``combination`` = n [3], must
    move that atom by ``n L_layer`` in every layer and change nothing else (affine updates)."""
    pos, z, cell = crystal
    n = np.asarray(combination, dtype=np.float64)
    moved = pos.copy()
    moved[atom] += n @ cell
    pos_layers, cell_layers = _layers(model, flat_batch([crystal]))
    pos_moved, cell_moved = _layers(model, flat_batch([(moved, z, cell)]))
    expected = pos_layers.clone()
    expected[:, atom] += torch.from_numpy(n).to(pos_layers.dtype) @ cell_layers[:, 0]
    return _largest(pos_moved - expected, cell_moved - cell_layers)


def batching_error(model, crystals: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   pbc: Sequence[Sequence[bool]] | None = None) -> float:
    """Each crystal of a batch must get the result it gets alone."""
    rows = [list(r) for r in pbc] if pbc is not None else [[True] * 3 for _ in crystals]
    pos_layers, cell_layers = _layers(model, flat_batch(crystals, pbc=rows))
    worst, start = 0.0, 0
    for k, crystal in enumerate(crystals):
        alone_pos, alone_cell = _layers(model, flat_batch([crystal], pbc=[rows[k]]))
        n = len(crystal[1])
        worst = max(worst, _largest(pos_layers[:, start:start + n] - alone_pos, cell_layers[:, k:k + 1] - alone_cell))
        start += n
    return worst


def load_testing_ops() -> bool:
    """Load the tests' own op library ``e3relax_fast._testing_ops`` (``csrc/testing/``, docs/backends.md,
    "Test seams") and say whether ``torch.ops.e3relax_testing.radius_graph_targets`` is there. Never
    loaded by the package itself."""
    import glob
    import os

    found = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_testing_ops*.so")))
    if not found:
        return False
    torch.ops.load_library(found[0])
    return hasattr(torch.ops.e3relax_testing, "radius_graph_targets")
