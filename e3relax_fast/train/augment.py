"""Re-perturbed inputs: fresh unrelaxed structures made from a pair's relaxed side.

A relaxed structure is a minimum of the labelling method's energy, so a small strain and rattle of it
relaxes back to it. Replacing a training pair's input by such a perturbation of its target gives the
model a new input for every pass (the same target), as the pair generator made the originals
(``shared/tools/make_pairs.py``): a random symmetric strain, a volume change, and every atom moved by
one distance in random directions. Three choices keep the target right:

- the volume is drawn around the pair's *own* unrelaxed volume, so the model still has to learn the
  volume from the elements, as on real inputs;
- the atoms keep the relaxed fractional coordinates under the strain (a cell filter relaxes back along
  the same path);
- the rattle has zero mean per structure: a relaxation conserves the centroid (forces sum to zero), so
  a rattle with a net shift would ask for a translation no input can tell.

The graph of a perturbed input is built anew with the store's graph settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..ops import radius_graph
from .batching import PairBatch
from .config import AugmentConfig


def perturbed_input(pos_relaxed: np.ndarray, cell_relaxed: np.ndarray, unrelaxed_volume: float,
                    rng: np.random.Generator, how: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """A new input for a relaxed structure: ``(pos [n,3], cell [3,3])`` in Å (rows are lattice vectors)."""
    relaxed_volume = abs(float(np.linalg.det(cell_relaxed)))
    factor = unrelaxed_volume / relaxed_volume * rng.uniform(1.0 - how.volume, 1.0 + how.volume)
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


def perturb_batch(batch: PairBatch, chosen: np.ndarray, rng: np.random.Generator, how: AugmentConfig,
                  graph_cutoff: float, max_neighbors: int, self_images: str) -> PairBatch:
    """``batch`` with the inputs of structures ``chosen`` (bool [B]) replaced by perturbations of their
    targets, and the graph of the whole batch rebuilt on the new inputs (targets unchanged)."""
    if not chosen.any():
        return batch
    pos = batch.pos.numpy().copy()
    cell = batch.cell.numpy().copy()
    ptr = batch.ptr.numpy()
    for b in np.nonzero(chosen)[0]:
        a0, a1 = int(ptr[b]), int(ptr[b + 1])
        pos[a0:a1], cell[b] = perturbed_input(batch.target_pos[a0:a1].numpy(), batch.target_cell[b].numpy(),
                                              abs(float(np.linalg.det(cell[b]))), rng, how)
    pos_t, cell_t = torch.from_numpy(pos), torch.from_numpy(cell)
    edge_index, shifts, _ = radius_graph(pos_t, cell_t, batch.pbc, batch.ptr, graph_cutoff,
                                         max_neighbors=max_neighbors, self_images=self_images)
    return dataclasses.replace(batch, pos=pos_t, cell=cell_t, edge_index=edge_index, shifts=shifts)


class BatchAugmenter:
    """Picklable ``(batch, k) -> batch`` for :class:`StoreBatches`: batch ``k`` of a pass is perturbed
    with a generator seeded by ``(seed, pass, first_batch + k, rank)``, so a resumed run, which
    restarts a pass at ``first_batch``, draws the same perturbations."""

    def __init__(self, how: AugmentConfig, eligible: np.ndarray, seed: int, pass_index: int, first_batch: int,
                 rank: int, graph_cutoff: float, max_neighbors: int, self_images: str):
        self.how = how
        self.eligible = eligible
        self.key = (seed, pass_index, first_batch, rank)
        self.graph = (graph_cutoff, max_neighbors, self_images)

    def __call__(self, batch: PairBatch, k: int) -> PairBatch:
        seed, pass_index, first_batch, rank = self.key
        rng = np.random.default_rng([seed, 0xA06, pass_index, first_batch + k, rank])
        chosen = self.eligible[batch.indices.numpy()] & (rng.random(batch.num_structures) < self.how.fraction)
        return perturb_batch(batch, chosen, rng, self.how, *self.graph)
