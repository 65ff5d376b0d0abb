"""The input's space group, kept by the prediction: found with spglib, then imposed on the predicted
positions and cell (docs/relax.md, "Symmetry").

A DFT or force-field relaxation started from a structure keeps the symmetry of that structure, and
runs faster the more symmetry it has; a pre-relaxation that returns P1 from a cubic input throws that
away. :func:`find_symmetry` takes the input's operations at a tolerance ``symprec`` (Å, spglib's
meaning; pymatgen's default 0.01); :func:`project` replaces a prediction by the average of its images
under those operations, which is what a symmetry-constrained relaxation would have kept:

- the cell: the metric ``G = L L^T`` (rows of L are the lattice vectors) is averaged as
  ``mean_k W_k^T G W_k`` over the operations' rotations ``W_k`` in the lattice basis, and the cell is
  rebuilt with that metric and the orientation of the predicted cell (``L = G^(1/2) Q``, Q from the
  polar decomposition of the prediction);
- the atoms: in fractional coordinates of the predicted cell, atom j becomes the mean over k of
  ``W_k f_i + w_k`` (i the atom that operation k sends to j, each image taken nearest to f_j).

Both averages are projections: a prediction that already has the symmetry is returned unchanged (to
rounding), and the result has every operation of the input exactly, so spglib finds the input's group
in it (or a higher one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Default tolerance (Å) of the space-group search, pymatgen's SpacegroupAnalyzer default.
DEFAULT_SYMPREC = 0.01


def parse_symprec(text: str) -> float | None:
    """A command-line tolerance: a number of Å, or ``none`` (no symmetry imposed)."""
    if text.strip().lower() == "none":
        return None
    return float(text)


@dataclass(frozen=True)
class InputSymmetry:
    """Operations of an input in its own lattice basis: ``rotations [K,3,3]`` (integer, acting on
    fractional column vectors), ``translations [K,3]`` (fractional), ``permutations [K,n]`` (operation k
    sends atom i to atom ``permutations[k, i]``), the space-group ``number`` and ``symbol``."""

    rotations: np.ndarray
    translations: np.ndarray
    permutations: np.ndarray
    number: int
    symbol: str

    @property
    def label(self) -> str:
        """``"Fm-3m (225)"``."""
        return f"{self.symbol} ({self.number})"


def spglib_dataset(pos: np.ndarray, z: np.ndarray, cell: np.ndarray, symprec: float):
    """spglib's symmetry dataset of (pos [n,3] Å, z [n], cell [3,3] rows) at ``symprec`` Å, or None
    when it finds none. spglib's own warnings on stderr (failed attempts it recovers from) are off
    unless SPGLIB_WARNING is set."""
    os.environ.setdefault("SPGLIB_WARNING", "OFF")
    import spglib

    error_module = getattr(spglib, "error", None)
    if error_module is not None and hasattr(error_module, "OLD_ERROR_HANDLING"):
        error_module.OLD_ERROR_HANDLING = False  # spglib >= 2.5: raise instead of returning None
    frac = np.linalg.solve(cell.T, pos.T).T
    try:
        return spglib.get_symmetry_dataset((cell, frac, z), symprec=symprec)
    except Exception:  # noqa: BLE001 - spglib finding no symmetry is an answer, not a failure
        return None


def _images(frac: np.ndarray, rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """``W_k f_i + w_k`` for every operation k and atom i: [K, n, 3] (fractional)."""
    return np.einsum("kij,nj->kni", rotations, frac) + translations[:, None, :]


def _permutations(frac: np.ndarray, z: np.ndarray, cell: np.ndarray, rotations: np.ndarray,
                  translations: np.ndarray, tolerance: float) -> np.ndarray | None:
    """Where each operation sends each atom (same species, within ``tolerance`` Å of an image), all
    operations in one nearest-neighbour query; None if some operation maps an atom onto no atom (the
    operations do not fit these positions)."""
    from scipy.spatial import cKDTree

    images = _images(frac, rotations, translations) % 1.0
    _, found = cKDTree(frac % 1.0, boxsize=1.0 + 1e-12).query(images.reshape(-1, 3))
    found = found.reshape(len(rotations), len(frac))
    offset = images - frac[found]
    offset -= np.rint(offset)
    distance = np.linalg.norm(offset @ cell, axis=2)
    one_to_one = (np.sort(found, axis=1) == np.arange(len(frac))).all()
    if (distance > tolerance).any() or (z[found] != z).any() or not one_to_one:
        return None
    return found


def find_symmetry(pos: np.ndarray, z: np.ndarray, cell: np.ndarray, symprec: float = DEFAULT_SYMPREC
                  ) -> InputSymmetry | None:
    """The space-group operations of a periodic structure (pos [n,3] Å, z [n], cell [3,3] rows, Å) at
    tolerance ``symprec`` (Å); None when spglib finds none or only the identity."""
    pos, z, cell = np.asarray(pos, dtype=np.float64), np.asarray(z), np.asarray(cell, dtype=np.float64)
    dataset = spglib_dataset(pos, z, cell, symprec)
    if dataset is None or len(dataset.rotations) <= 1:
        return None
    rotations = np.asarray(dataset.rotations, dtype=np.float64)
    translations = np.asarray(dataset.translations, dtype=np.float64)
    frac = np.linalg.solve(cell.T, pos.T).T
    permutations = _permutations(frac, z, cell, rotations, translations, 2.0 * symprec)
    if permutations is None:
        return None
    return InputSymmetry(rotations, translations, permutations, int(dataset.number),
                         str(dataset.international))


def _symmetric_cell(symmetry: InputSymmetry, cell: np.ndarray) -> np.ndarray:
    """The cell [3,3] with the average metric over the operations and the orientation of ``cell``."""
    metric = cell @ cell.T
    averaged = np.einsum("kji,jl,klm->im", symmetry.rotations, metric, symmetry.rotations) / len(symmetry.rotations)
    values, vectors = np.linalg.eigh(0.5 * (metric + metric.T))
    orientation = (vectors / np.sqrt(values)) @ vectors.T @ cell  # G^(-1/2) L: orthogonal
    values, vectors = np.linalg.eigh(0.5 * (averaged + averaged.T))
    return (vectors * np.sqrt(values)) @ vectors.T @ orientation


def _symmetric_fractions(symmetry: InputSymmetry, frac: np.ndarray) -> np.ndarray:
    """Mean over the operations of the image of each atom's source, taken nearest to the atom."""
    images = _images(frac, symmetry.rotations, symmetry.translations)  # image of atom i lands on permutations[k, i]
    images -= np.rint(images - frac[symmetry.permutations])
    sources = np.argsort(symmetry.permutations, axis=1)  # which atom each operation sends onto atom j
    return np.take_along_axis(images, sources[:, :, None], axis=1).mean(axis=0)


def project(symmetry: InputSymmetry, pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A prediction (pos [n,3] Å, cell [3,3] rows, Å, in the input's lattice basis and atom order) with
    the input's symmetry imposed: ``(pos, cell)``. The atoms keep their fractional coordinates' average
    under the operations in the averaged cell."""
    pos, cell = np.asarray(pos, dtype=np.float64), np.asarray(cell, dtype=np.float64)
    frac = np.linalg.solve(cell.T, pos.T).T
    new_cell = _symmetric_cell(symmetry, cell)
    return _symmetric_fractions(symmetry, frac) @ new_cell, new_cell
