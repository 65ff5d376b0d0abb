"""Fresh perturbed inputs for training pairs, drawn every time a pair is drawn.

Two kinds of training pair get them, both from :func:`e3relax_fast.data.perturb.perturbed_input` (one
mechanism; its module docstring says why the target stays right):

- perturbation pairs (``kind == "perturbation"`` in the store, from ``e3relax preprocess
  --structures``): always, with the store's recorded perturbation settings, volume drawn around the
  relaxed volume. The input written in the store serves validation and test only;
- pairs of other sources chosen by ``data.augment`` (``source_contains``, with probability
  ``fraction``): volume drawn around the pair's *own* unrelaxed volume, so the model still learns the
  volume from the elements, as on real inputs.

Every draw is seeded by ``(run seed, pass, batch of the pass, pair index)`` alone, so a resumed run,
which restarts a pass at any batch, and any worker or rank draw the same inputs, and a pair drawn twice
in one pass (``data.source_weights`` above 1) gets two different inputs. The new input's basis is reduced
(:func:`e3relax_fast.data.convert.reduce_basis`) and the target's cell follows the same change of
basis, as the store does; the graph of the batch is rebuilt with the store's graph settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data.convert import reduce_basis
from ..data.perturb import PerturbConfig, perturbed_input
from ..ops import radius_graph
from ..data.batching import CrystalBatch
from .config import AugmentConfig


class BatchAugmenter:
    """Picklable ``(batch, k) -> batch`` for :class:`StoreBatches`.

    Args:
        augment: ``data.augment`` of the run (pairs of other sources).
        eligible: bool [num_pairs], pairs ``data.augment`` may perturb.
        perturbation: settings of the store's perturbation pairs (None: the store has none).
        is_perturbation: bool [num_pairs], the store's perturbation pairs.
        seed / pass_index: run seed and pass of the training order.
        graph: ``(cutoff Å, max_neighbors, self_images)`` of the store.
        first_batch: the batch of the pass that the loader's batch 0 is (a resumed pass starts later).
    """

    def __init__(self, augment: AugmentConfig, eligible: np.ndarray, perturbation: PerturbConfig | None,
                 is_perturbation: np.ndarray, seed: int, pass_index: int, graph: tuple[float, int, str],
                 first_batch: int = 0):
        # resolved once: a draw per drawn pair reads two plain values, not the config
        self.fraction, self.settings = augment.fraction, augment.perturbation()
        self.eligible = eligible
        self.perturbation = perturbation
        self.is_perturbation = is_perturbation
        self.key = (seed, pass_index)
        self.graph = graph
        self.first_batch = first_batch

    def draw(self, index: int, input_volume: float, relaxed_volume: float, batch_in_pass: int = 0
             ) -> tuple[np.random.Generator, PerturbConfig, float] | None:
        """``(generator, settings, centre volume Å³)`` of pair ``index``'s fresh input in batch
        ``batch_in_pass`` of the pass, or None."""
        rng = np.random.default_rng([*self.key, batch_in_pass, 0xA06, index])
        if self.is_perturbation[index] and self.perturbation is not None:
            return rng, self.perturbation, relaxed_volume
        if self.eligible[index] and rng.random() < self.fraction:
            return rng, self.settings, input_volume
        return None

    def __call__(self, batch: CrystalBatch, k: int = 0) -> CrystalBatch:
        pos, cell = batch.pos.numpy().copy(), batch.cell.numpy().copy()
        target_cell = batch.target_cell.numpy().copy()
        ptr = batch.ptr.numpy()
        changed = False
        for b, index in enumerate(batch.indices.tolist()):
            plan = self.draw(index, abs(float(np.linalg.det(cell[b]))), abs(float(np.linalg.det(target_cell[b]))),
                             self.first_batch + k)
            if plan is None:
                continue
            a0, a1 = int(ptr[b]), int(ptr[b + 1])
            new_pos, new_cell = perturbed_input(batch.target_pos[a0:a1].numpy(), target_cell[b], plan[2],
                                                plan[0], plan[1])
            cell[b], change = reduce_basis(new_cell, batch.pbc[b].numpy())
            target_cell[b] = change @ target_cell[b]
            pos[a0:a1] = new_pos
            changed = True
        if not changed:
            return batch
        return rebuild_graph(batch, torch.from_numpy(pos), torch.from_numpy(cell), torch.from_numpy(target_cell),
                             self.graph)


def rebuild_graph(batch: CrystalBatch, pos: torch.Tensor, cell: torch.Tensor, target_cell: torch.Tensor,
                  graph: tuple[float, int, str]) -> CrystalBatch:
    """``batch`` with new inputs ``pos [N,3]``, ``cell [B,3,3]`` (and target cells in their bases) and
    the graph built anew on them."""
    cutoff, max_neighbors, self_images = graph
    edge_index, shifts, _ = radius_graph(pos, cell, batch.pbc, batch.ptr, cutoff, max_neighbors=max_neighbors,
                                         self_images=self_images)
    return dataclasses.replace(batch, pos=pos, cell=cell, target_cell=target_cell, edge_index=edge_index,
                               shifts=shifts)
