"""Structures to flat tensors and back; the one batch type and packer; unwrapping of relaxed targets."""

from .batching import CrystalBatch, flat_graph, pack_greedy
from .convert import (
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
    "flat_graph",
    "pack_greedy",
    "reduce_basis",
    "structure_arrays",
    "structures_from_batch",
    "unwrap_positions",
    "with_geometry",
]
