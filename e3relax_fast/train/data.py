"""The store as a training run reads it: which pairs train and which validate, the batch order of every
pass, and a loader for this rank's share of a pass, its pairs given fresh inputs where they should be.

Everything ``data.*`` of a training config means is resolved here, once, when a run starts
(:class:`TrainingData`); the trainer (``train/trainer.py``) asks it for batches.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..data.batching import pack_batches
from ..data.pairs import PATH_KIND
from ..data.perturb import PERTURBATION_KIND, PerturbConfig
from ..data.store import PairStore, source_name
from ..model.config import E3RelaxConfig
from .augment import BatchAugmenter
from .batching import BatchOrder, StoreBatches
from .config import DataConfig


class TrainingData:
    """A run's view of its store (``data`` of the config, checked against the ``model``'s graph settings).

    Attributes:
        store: the :class:`PairStore`; ``train_indices`` / ``val_indices``: its pairs that train and that
            validate (relaxation-path frames never validate: the model is judged on true inputs);
        order: the global batch order of every pass (``data.source_weights`` applied);
        val_batches: validation batches of ``val_indices``; ``val_source``: each one's source name;
        score_names: the sources ``val_score`` averages (``data.score_sources``, else all);
        augment_eligible: bool [num_pairs], the pairs ``data.augment`` may give fresh inputs.
    """

    def __init__(self, data: DataConfig, model: E3RelaxConfig, seed: int, world_size: int = 1, rank: int = 0):
        if not data.store:
            raise ValueError("data.store is not set: make a store with `e3relax preprocess` and point to it")
        self.store = store = PairStore(data.store)
        store.graph.require_model(model, data.store)
        self.world_size, self.rank, self.num_workers = world_size, rank, data.num_workers
        self.train_indices = store.indices(data.train_split)
        self.val_source = validation_sources(store, data.val_split)
        self.val_indices = np.array(list(self.val_source), dtype=np.int64)
        if len(self.val_indices) == 0:
            raise ValueError(f"split {data.val_split!r} of the store is empty; validation needs pairs")
        draws = draw_weights(store, self.train_indices, data.source_weights, data.store)
        self.order = BatchOrder(self.train_indices, store.num_atoms, data.max_structures_per_batch,
                                data.max_atoms_per_batch, seed, world_size, draws)
        self.score_names = scored_sources(sorted(set(self.val_source.values())), data.score_sources, data.store)
        self.val_batches = pack_batches(np.sort(self.val_indices), store.num_atoms, data.max_structures_per_batch,
                                        data.max_atoms_per_batch)
        # relaxation-path frames keep their own inputs: they are the easier inputs they were added as
        self.augment_eligible = np.array([data.augment.source_contains in source and kind != PATH_KIND
                                          for source, kind in zip(store.sources, store.kinds)])
        self.augmenter = _augmenter_of_passes(store, data, self.augment_eligible, seed)

    def scored_val_fingerprint(self) -> str:
        """:func:`val_fingerprint` of the validation pairs ``val_score`` averages over."""
        return val_fingerprint(self.store, self.val_source, self.score_names)

    def pass_loader(self, pass_index: int, first_batch: int) -> tuple[list[np.ndarray], torch.utils.data.DataLoader]:
        """The global batches of pass ``pass_index`` from ``first_batch`` on (a resumed pass starts
        later), and a loader of this rank's share of each, collated (and given fresh inputs) in order."""
        batches = self.order.batches(pass_index)[first_batch:]
        shares = [b[self.rank::self.world_size] for b in batches]
        augment = self.augmenter(pass_index=pass_index, first_batch=first_batch) if self.augmenter else None
        loader = torch.utils.data.DataLoader(StoreBatches(str(self.store.path), shares, augment), batch_size=None,
                                             shuffle=False, num_workers=self.num_workers)
        return batches, loader


def scored_sources(names: list[str], wanted: list[str], store_path: str) -> list[str]:
    """The validation sources that make ``val_score``: ``wanted`` (``data.score_sources``), each of which
    the validation split must hold, or all ``names`` when it is empty."""
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise ValueError(f"data.score_sources names {missing}, which the validation split of {store_path!r} "
                         f"does not hold; its sources: {names}")
    return sorted(set(wanted)) if wanted else names


def validation_sources(store: PairStore, split: str) -> dict[int, str]:
    """The pairs of ``split`` that validate (relaxation-path frames never do), by store index, each with
    its source name, in the store's order."""
    return {int(i): source_name(store.sources[i], store.kinds[i]) for i in store.indices(split)
            if store.kinds[i] != PATH_KIND}


def val_fingerprint(store: PairStore, val_source: dict[int, str], score_names: list[str]) -> str:
    """SHA-256 of the ids, inputs and targets of the validation pairs (``val_source``: index -> source)
    of the sources in ``score_names``: equal fingerprints mean scores that can be compared (``e3relax
    train --resume --new-data``)."""
    import hashlib

    scored = set(score_names)
    digest = hashlib.sha256()
    chosen = [i for i, name in val_source.items() if name in scored]
    for i in sorted(chosen, key=lambda i: (val_source[i], store.ids[i])):
        pair = store.pair(i)
        digest.update(f"{val_source[i]}\n{store.ids[i]}\n".encode())
        for key in ("z", "pos_unrelaxed", "cell_unrelaxed", "pos_relaxed", "cell_relaxed"):
            digest.update(np.ascontiguousarray(pair[key], dtype=np.float64).tobytes())
    return digest.hexdigest()


def scored_val_fingerprint(data: DataConfig) -> str:
    """:func:`val_fingerprint` of the pairs ``val_score`` averages over in the store ``data`` names,
    without building a run's view of it (for the store a checkpoint trained on)."""
    store = PairStore(data.store)
    val_source = validation_sources(store, data.val_split)
    score_names = scored_sources(sorted(set(val_source.values())), data.score_sources, data.store)
    return val_fingerprint(store, val_source, score_names)


def draw_weights(store: PairStore, indices: np.ndarray, weights: dict[str, float], store_path: str
                 ) -> np.ndarray | None:
    """Draws per pass of each pair of ``indices`` from weights by source name (``data.source_weights``;
    empty: every pair once). A name the pairs do not hold is an error naming the store's sources,
    unless its weight is 0 (nothing to draw: a recipe may name a source some stores lack)."""
    if not weights:
        return None
    names = [source_name(store.sources[i], store.kinds[i]) for i in indices]
    unknown = sorted(name for name in set(weights) - set(names) if weights[name] != 0)
    if unknown:
        raise ValueError(f"data.source_weights names {unknown}, which the training split of "
                         f"{store_path!r} does not hold; its sources: {sorted(set(names))}")
    return np.array([weights.get(name, 1.0) for name in names], dtype=np.float64)


def _augmenter_of_passes(store: PairStore, data: DataConfig, eligible: np.ndarray, seed: int
                         ) -> functools.partial | None:
    """``BatchAugmenter`` of a pass, waiting for its pass and first batch; None when no pair gets fresh
    inputs (no ``data.augment`` fraction, no perturbation pairs)."""
    settings = store.meta.get("perturbation")
    perturbation = PerturbConfig(**settings) if settings else None
    if not (data.augment.fraction > 0 or perturbation is not None):
        return None
    is_perturbation = np.array([kind == PERTURBATION_KIND for kind in store.kinds])
    graph = (store.graph.cutoff, store.graph.max_neighbors, store.graph.self_images)
    return functools.partial(BatchAugmenter, data.augment, eligible, perturbation, is_perturbation, seed, graph=graph)
