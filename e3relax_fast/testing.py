"""Random crystals and batch helpers for tests and benchmarks (deterministic given a seed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor


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
    """``(pos, z, cell, pbc, ptr)`` of a list of ``(pos, z, cell)`` crystals (periodic unless given)."""
    sizes = [len(z) for _, z, _ in crystals]
    ptr = torch.zeros(len(crystals) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(sizes), 0)
    pos = torch.from_numpy(np.concatenate([p for p, _, _ in crystals])).to(dtype)
    z = torch.from_numpy(np.concatenate([zz for _, zz, _ in crystals]))
    cell = torch.from_numpy(np.stack([c for _, _, c in crystals])).to(dtype)
    pbc_tensor = torch.ones((len(crystals), 3), dtype=torch.bool) if pbc is None else torch.tensor(pbc)
    return pos, z, cell, pbc_tensor, ptr


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix [3, 3]."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
