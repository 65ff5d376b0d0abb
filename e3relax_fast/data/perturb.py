"""Perturbed inputs made from relaxed structures: the one mechanism behind two uses.

A relaxed structure is a minimum of the labelling method's energy, so a small strain, rescaling and
rattle of it relaxes back to it: the perturbed copy is an input whose target is known exactly.

- ``e3relax preprocess --structures FILE`` turns relaxed-only sets (the Materials Project) into pairs:
  :func:`structure_pairs` writes one fixed perturbation per structure into the store (seeded by the
  structure's id, so two runs write the same validation and test inputs), and training replaces the
  inputs of training pairs by a fresh draw every time they are drawn (``train/augment.py``).
- ``data.augment`` in a training config gives pairs of other sources the same fresh inputs, drawn
  around the pair's own unrelaxed volume.

Three choices keep the target right: the atoms keep the relaxed fractional coordinates under the
strain (a cell-filter relaxation follows the same path back); the rattle has zero mean per structure,
so the fractional centroid is kept (forces sum to zero, a relaxation conserves the centroid, and a net
shift would ask for a translation no input can tell); the strain is symmetric (a rotation is not a
deformation).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..io.structures import read_structures
from .convert import reduce_basis, structure_arrays
from .pairs import PERTURBATION_KIND, PairRecord


@dataclass(frozen=True)
class PerturbConfig:
    """How far a perturbed input lies from its relaxed structure, as far as generated and substituted
    crystals lie from their minima in practice (``docs/training.md``).

    Attributes:
        strain: half-width of each entry of the random symmetric strain (0.04: strains of a few percent).
        volume: the volume is drawn from (1 +- volume) times the centre volume (the relaxed one for
            ``--structures`` pairs, the pair's unrelaxed one for ``data.augment``); 0.1: up to 10%.
        rattle_min / rattle_max: range of the per-structure rattle distance, Å; every atom moves by that
            distance in a random direction before the mean is removed (0.05-0.15: 0.1 Å on average).
    """

    strain: float = 0.04
    volume: float = 0.10
    rattle_min: float = 0.05
    rattle_max: float = 0.15

    def __post_init__(self) -> None:
        if not (0.0 <= self.strain < 0.5 and 0.0 <= self.volume < 1.0
                and 0.0 <= self.rattle_min <= self.rattle_max):
            raise ValueError(f"perturbation {asdict(self)}: need 0 <= strain < 0.5, 0 <= volume < 1 and "
                             "0 <= rattle_min <= rattle_max")

    def to_dict(self) -> dict:
        return asdict(self)


def perturbed_input(pos_relaxed: np.ndarray, cell_relaxed: np.ndarray, centre_volume: float,
                    rng: np.random.Generator, how: PerturbConfig) -> tuple[np.ndarray, np.ndarray]:
    """A perturbed copy of a relaxed structure: ``(pos [n,3], cell [3,3])`` in Å (rows are lattice
    vectors), volume drawn around ``centre_volume`` (Å³)."""
    relaxed_volume = abs(float(np.linalg.det(cell_relaxed)))
    factor = centre_volume / relaxed_volume * rng.uniform(1.0 - how.volume, 1.0 + how.volume)
    strain = rng.uniform(-how.strain, how.strain, (3, 3))
    deformation = np.cbrt(factor) * (np.eye(3) + 0.5 * (strain + strain.T))
    cell = cell_relaxed @ deformation
    pos = pos_relaxed @ deformation  # fractional coordinates kept: x L_r^-1 L' = x D
    directions = rng.normal(size=pos.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True).clip(min=1e-12)
    rattle = rng.uniform(how.rattle_min, how.rattle_max) * directions
    if len(pos) > 1:
        rattle -= rattle.mean(axis=0)
    return pos + rattle, cell


def id_seed(structure_id: str, seed: int) -> list[int]:
    """Generator seed of a structure's stored perturbation: ``(seed, SHA-256 of the id)``, so it
    depends on nothing but the two (not on the file order or on the other structures)."""
    digest = hashlib.sha256(structure_id.encode()).digest()
    return [seed, 0x9E7, int.from_bytes(digest[:8], "big")]


def structure_pairs(path: str | Path, how: PerturbConfig = PerturbConfig(), seed: int = 0,
                    max_atoms: int = 0) -> Iterator[PairRecord]:
    """Pairs from relaxed structures (any file or folder that ``e3relax predict`` reads): the structure
    (its basis Niggli-reduced) is the relaxed side, its perturbation (:func:`perturbed_input` around its
    own volume, seeded by :func:`id_seed`) the unrelaxed side. Ids and groups are those of
    ``e3relax_fast/io/structures.py`` (a structure without a group key is its own group). Structures with
    more than ``max_atoms`` atoms (0: no limit) are left out (not failures)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure source {str(path)!r} does not exist")
    return _perturbation_records(path, how, seed, max_atoms)


def _perturbation_records(path: Path, how: PerturbConfig, seed: int, max_atoms: int) -> Iterator[PairRecord]:
    for structure in read_structures([str(path)]):
        structure_id, group, atoms = structure.id, structure.group or structure.id, structure.structure
        if atoms is None:
            yield PairRecord(structure_id, group=group, error=structure.error, kind=PERTURBATION_KIND)
            continue
        if max_atoms and len(atoms) > max_atoms:
            continue
        try:
            pos, z, cell, pbc = structure_arrays(atoms, f"structure {structure_id!r}")
            if not np.all(pbc):
                raise ValueError(f"structure {structure_id!r}: field 'pbc' is {pbc.tolist()}; perturbation "
                                 "pairs need a crystal periodic along all three axes")
            cell, _ = reduce_basis(cell, pbc)
            rng = np.random.default_rng(id_seed(structure_id, seed))
            pos_u, cell_u = perturbed_input(pos, cell, abs(float(np.linalg.det(cell))), rng, how)
        except (ValueError, TypeError, np.linalg.LinAlgError) as err:
            yield PairRecord(structure_id, group=group, error=str(err), kind=PERTURBATION_KIND)
            continue
        yield PairRecord(structure_id, (pos_u, z, cell_u, pbc), (pos, z, cell, pbc), group, kind=PERTURBATION_KIND)
