"""Structures to flat tensors and back; unwrapping of relaxed targets."""

from .convert import (
    CrystalBatch,
    batch_from_arrays,
    batch_from_structures,
    reduce_basis,
    structure_arrays,
    structures_from_batch,
    unwrap_positions,
    with_geometry,
)

__all__ = [
    "CrystalBatch",
    "batch_from_arrays",
    "batch_from_structures",
    "reduce_basis",
    "structure_arrays",
    "structures_from_batch",
    "unwrap_positions",
    "with_geometry",
]
