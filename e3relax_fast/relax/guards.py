"""The relaxer's guards: what it refuses to take in and what it refuses to hand back.

An input is refused before it joins a batch (coincident atoms, an element the model never saw); a
prediction is refused after it (not finite, a volume far from the input's, atoms closer than any
bond) and the input geometry returned with a warning, never reported as a good prediction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..ops import neighbors
from ..ops.checks import check_batch
from .result import PreparedInput, RelaxResult

OVERLAP_POLICIES = ("input", "keep")
#: Pairs farther apart than this (Å) do not decide a structure's shortest distance check.
SHORTEST_DISTANCE_RANGE = 4.0
#: Inputs with two atoms (or an atom and its own image) closer than this (Å) are refused as coincident.
MIN_INPUT_DISTANCE = 0.1
#: A prediction that puts two atoms (or an atom and its own periodic image, a cell edge) closer than
#: this (Å) is refused whatever the input: no bond is that short (H2's is 0.74 Å).
MIN_PREDICTED_DISTANCE = 0.5
#: A prediction whose cell volume is more than this factor above or below the input's is refused:
#: relaxations change volumes by tens of percent, a factor of 2 is a model far outside its data.
MAX_VOLUME_FACTOR = 2.0


def shortest_distance(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> float:
    """Shortest distance (Å) between two atoms, or an atom and its own periodic image, if below
    :data:`SHORTEST_DISTANCE_RANGE`; ``inf`` otherwise."""
    _, _, distances = neighbors(pos, cell, pbc, SHORTEST_DISTANCE_RANGE, max_neighbors=1, self_images="all",
                                threads=1)
    return float(distances.min()) if len(distances) else float("inf")


def check_input_arrays(structure_id: str, arrays: tuple, num_elements: int) -> None:
    """Raise ``ValueError`` naming the structure and field unless ``(pos, z, cell, pbc)`` is one valid
    structure (finite, known elements, a cell that spans its periodic axes), checked alone so that one
    bad input never fails its batch."""
    pos, z, cell, pbc = (torch.tensor(a) for a in arrays)  # copies: pymatgen hands out read-only views
    check_batch(pos, cell.unsqueeze(0), pbc.unsqueeze(0), torch.tensor([0, len(z)]), z,
                names=[structure_id], num_elements=num_elements)


def check_input_distance(structure_id: str, closest: float) -> None:
    """Raise ``ValueError`` when an input's shortest distance (Å) says two atoms coincide."""
    if closest < MIN_INPUT_DISTANCE:
        raise ValueError(f"structure {structure_id!r}: field 'positions' puts two atoms {closest:.3g} Å apart "
                         f"(below {MIN_INPUT_DISTANCE} Å: coincident atoms, a duplicated site?)")


def unknown_element_note(structure_id: str, numbers: np.ndarray, elements: set[int], policy: str) -> str:
    """``""`` when every element of ``numbers`` was seen in training (or ``elements`` is empty: not
    known); otherwise ``ValueError`` under policy ``"error"``, a warning and the note the result carries
    under ``"warn"``."""
    unknown = sorted({int(z) for z in numbers} - elements) if elements else []
    if not unknown:
        return ""
    from pymatgen.core import Element

    symbols = ", ".join(Element.from_Z(z).symbol for z in unknown)
    found = f"structure {structure_id!r}: field 'species' holds {symbols}, not seen in training"
    if policy == "error":
        raise ValueError(found + " (on_unknown_element='warn' relaxes it anyway)")
    warnings.warn(found + " (on_unknown_element='warn' relaxes it anyway)", stacklevel=4)
    return found + ": relaxed anyway"


@dataclass(frozen=True)
class PredictionGuards:
    """The checks a prediction passes before it is handed back (``E3Relaxer``'s arguments of the same
    names): a volume factor, and an overlap ratio with what to do below it (``on_overlap``)."""

    max_volume_factor: float = MAX_VOLUME_FACTOR
    overlap_ratio: float = 0.6
    on_overlap: str = "input"

    def __post_init__(self) -> None:
        if self.on_overlap not in OVERLAP_POLICIES:
            raise ValueError(f"on_overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {self.on_overlap!r}")
        if not 0.0 <= self.overlap_ratio < 1.0:
            raise ValueError(f"overlap_ratio must be in [0, 1), got {self.overlap_ratio}")
        if not self.max_volume_factor > 1.0:
            raise ValueError(f"max_volume_factor must be above 1 (inf: no volume check), got {self.max_volume_factor}")

    def apply(self, result: RelaxResult, prepared: PreparedInput, pos: np.ndarray, cell: np.ndarray) -> None:
        """Refuse or flag the prediction ``(pos [n,3], cell [3,3])`` Å, in the reduced basis."""
        closest = self.refuse_out_of_bounds(result, prepared, pos, cell)
        if closest is not None:
            self.check_overlap(result, prepared, closest)

    def refuse_out_of_bounds(self, result: RelaxResult, prepared: PreparedInput, pos: np.ndarray,
                             cell: np.ndarray) -> float | None:
        """Refuse (input geometry back, with a warning) a prediction that is not finite, whose volume
        left ``[1/max_volume_factor, max_volume_factor]`` times the input's, or whose shortest distance
        (self-images included) is below :data:`MIN_PREDICTED_DISTANCE`. Returns that shortest distance
        (Å) of an accepted prediction, None when refused."""
        if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
            reason = "holds non-finite positions or cell entries"
        else:
            ratio = abs(float(np.linalg.det(cell) / np.linalg.det(prepared.arrays[2])))  # both in the reduced basis
            if not 1 / self.max_volume_factor <= ratio <= self.max_volume_factor:
                reason = (f"changes the cell volume by a factor of {ratio:.3g} "
                          f"(max_volume_factor={self.max_volume_factor:g})")
            else:
                closest = shortest_distance(pos, cell, prepared.arrays[3])
                if closest >= MIN_PREDICTED_DISTANCE:
                    return closest
                reason = (f"puts two atoms (or an atom and its periodic image) {closest:.3g} Å apart, below the "
                          f"physical floor of {MIN_PREDICTED_DISTANCE} Å")
        result.confidence["shortest_distance_ratio"] = float("nan")
        result.return_input_geometry()
        result.warning = f"structure {result.id!r}: the prediction {reason}: returned the input geometry"
        return None

    def check_overlap(self, result: RelaxResult, prepared: PreparedInput, closest: float) -> None:
        """Flag a prediction whose shortest distance fell below ``overlap_ratio`` of the input's, and
        return the input geometry under ``on_overlap="input"``."""
        # beyond the search range the input's shortest distance is only known to exceed it: the ratio
        # to the range is then an upper bound of the true one, and a prediction beyond it passes
        before = min(prepared.shortest_distance, SHORTEST_DISTANCE_RANGE)
        after = min(closest, SHORTEST_DISTANCE_RANGE)
        ratio = after / before if before > 0 else 1.0
        result.confidence["shortest_distance_ratio"] = ratio
        if ratio >= self.overlap_ratio:
            return
        result.warning = (f"structure {result.id!r}: the prediction puts two atoms {after:.2f} Å apart, "
                          f"{ratio:.2f} of the input's shortest distance {before:.2f} Å (below "
                          f"overlap_ratio={self.overlap_ratio:g}): ")
        if self.on_overlap == "input":
            result.return_input_geometry()
            result.warning += "returned the input geometry (on_overlap='input')"
        else:
            result.warning += "kept (on_overlap='keep')"


def is_out_of_memory(err: BaseException) -> bool:
    """Whether a failed batch ran out of memory (CUDA or host), so that halving it may help."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower() or \
        "can't allocate memory" in str(err).lower()


def tensor_input(array: Any, name: str) -> torch.Tensor:
    """A torch tensor of an array given to ``relax_tensors`` (DLPack without a copy where it can), or
    ``ValueError`` naming the field."""
    if isinstance(array, torch.Tensor):
        return array
    if hasattr(array, "__dlpack__"):
        try:
            return torch.from_dlpack(array)
        except (RuntimeError, TypeError, BufferError):
            pass  # e.g. a read-only numpy array: fall back to a copy
    try:
        return torch.as_tensor(np.asarray(array))
    except (TypeError, ValueError) as err:
        raise ValueError(f"field {name!r}: not an array ({type(array).__name__}): {err}") from None
