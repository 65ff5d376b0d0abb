"""The training order: a deterministic atom-budget batch order of stored pairs, and the dataset a
DataLoader's workers turn into tensors (``PairStore.batch``, e3relax_fast/data/store.py).

The order of a run is a pure function of ``(seed, pass)``: pass ``p`` over the training pairs shuffles
them with ``numpy.random.default_rng([seed, p])`` and packs them greedily into batches that close at
``max_structures`` or before ``max_atoms`` would be exceeded. A resumed run recomputes the same order
and skips the batches already done; with ``world_size`` ranks, every rank computes the same global
batches and takes structures ``rank::world_size`` of each. With draw weights (``data.source_weights``),
a pair of weight w appears floor(w) times in a pass, plus once more with probability w - floor(w),
drawn from the same generator before the shuffle.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.batching import CrystalBatch, pack_batches
from ..data.store import PairStore


class BatchOrder:
    """The global batch list of each pass over ``indices``, deterministic in ``seed``; ``draws``
    [len(indices)]: expected appearances of each pair per pass (None: each once)."""

    def __init__(self, indices: np.ndarray, num_atoms: np.ndarray, max_structures: int, max_atoms: int,
                 seed: int, world_size: int = 1, draws: np.ndarray | None = None):
        if len(indices) == 0:
            raise ValueError("the training split is empty")
        self.indices = np.asarray(indices)
        self.num_atoms = num_atoms
        self.max_structures = max_structures
        self.max_atoms = max_atoms
        self.seed = seed
        self.world_size = world_size
        self.draws = None if draws is None else np.asarray(draws, dtype=np.float64)
        if self.draws is not None and (self.draws.shape != self.indices.shape or not self.draws.sum() > 0):
            raise ValueError("draws must give every training pair a weight, and some weight must be positive")
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def batches(self, pass_index: int) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != pass_index:
            rng = np.random.default_rng([self.seed, pass_index])
            drawn = self.indices
            if self.draws is not None:
                whole = np.floor(self.draws)
                copies = whole.astype(np.int64) + (rng.random(len(self.draws)) < self.draws - whole)
                drawn = np.repeat(self.indices, copies)
            order = drawn[rng.permutation(len(drawn))]
            packed = pack_batches(order, self.num_atoms, self.max_structures, self.max_atoms)
            # every rank needs at least one structure of every batch
            packed = [b for b in packed if len(b) >= self.world_size]
            if not packed:
                raise ValueError(f"no batch holds {self.world_size} structures: raise max_structures_per_batch")
            self._cache = (pass_index, packed)
        return self._cache[1]


class StoreBatches(torch.utils.data.Dataset):
    """Dataset over a fixed list of index batches, so a DataLoader's workers can collate them.

    With ``augment`` (a callable ``(batch, k) -> batch``, picklable for workers), batch ``k`` is passed
    through it after collation.
    """

    def __init__(self, store_path: str, batches: list[np.ndarray], augment: Callable | None = None):
        self.store_path = store_path
        self.batches = batches
        self.augment = augment
        self._store: PairStore | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> CrystalBatch:
        if self._store is None:  # opened lazily: each worker maps the files itself
            self._store = PairStore(self.store_path)
        batch = self._store.batch(self.batches[k])
        return self.augment(batch, k) if self.augment is not None else batch
