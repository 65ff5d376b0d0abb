"""Named, deterministic benchmark workloads (same seed, same crystals, on every machine)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e3relax_fast.testing import random_crystal


@dataclass(frozen=True)
class Problem:
    name: str
    crystals: list  # [(pos [n,3], z [n], cell [3,3])]
    cutoff: float

    @property
    def num_atoms(self) -> int:
        return sum(len(z) for _, z, _ in self.crystals)


def small_crystals(count: int = 1000, cutoff: float = 6.0, seed: int = 0) -> Problem:
    """``count`` random triclinic crystals of 4-64 atoms at 15 Å^3/atom (the screening workload)."""
    rng = np.random.default_rng(seed)
    crystals = [random_crystal(rng, int(rng.integers(4, 65))) for _ in range(count)]
    return Problem(f"small_crystals_{count}", crystals, cutoff)


def fcc_supercell(repeats: int, cutoff: float = 6.0, a: float = 3.6) -> Problem:
    """A cubic FCC supercell of 4 * repeats^3 atoms (one big structure)."""
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(repeats)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    frac = ((grid + basis[None]) / repeats).reshape(-1, 3)
    cell = np.eye(3) * a * repeats
    return Problem(f"fcc_{len(frac)}", [(frac @ cell, np.full(len(frac), 29), cell)], cutoff)


# name -> (smoke, cutoff in Å) -> Problem
PROBLEMS = {
    "small": lambda smoke, cutoff=6.0: small_crystals(20 if smoke else 1000, cutoff),
    "fcc": lambda smoke, cutoff=6.0: fcc_supercell(3 if smoke else 8, cutoff),
    "fcc20k": lambda smoke, cutoff=6.0: fcc_supercell(3 if smoke else 17, cutoff),   # 19,652 atoms
    "fcc100k": lambda smoke, cutoff=6.0: fcc_supercell(3 if smoke else 29, cutoff),  # 97,556 atoms
}
