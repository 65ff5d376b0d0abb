"""The one batch packer of the package: training, evaluation and prediction cut their structures into
batches with :func:`pack_greedy`."""

from __future__ import annotations

from typing import Sequence


def pack_greedy(num_atoms: Sequence[int], max_structures: int, max_atoms: int = 0,
                num_edges: Sequence[int] | None = None, max_edges: int = 0) -> list[list[int]]:
    """Cut items ``0..len(num_atoms)-1``, in that order, into consecutive batches of at most
    ``max_structures`` items, ``max_atoms`` atoms and ``max_edges`` edges (0: no such budget); a batch
    closes when the next item would break a budget, and an item over a budget on its own goes alone.
    Returns the item positions of each batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    atoms = edges = 0
    for position, n in enumerate(num_atoms):
        e = int(num_edges[position]) if num_edges is not None else 0
        if current and (len(current) >= max_structures or (max_atoms and atoms + n > max_atoms)
                        or (max_edges and edges + e > max_edges)):
            batches.append(current)
            current, atoms, edges = [], 0, 0
        current.append(position)
        atoms += int(n)
        edges += e
    if current:
        batches.append(current)
    return batches
