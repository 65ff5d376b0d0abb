"""Re-perturbed inputs: what they keep of the target, that only the chosen pairs change, and that a
resumed run draws the same perturbations."""

import numpy as np
import pytest
import torch

from e3relax_fast.data.store import PairStore
from e3relax_fast.ops import radius_graph
from e3relax_fast.train import train
from e3relax_fast.train.augment import BatchAugmenter, perturb_batch, perturbed_input
from e3relax_fast.train.batching import collate
from e3relax_fast.train.config import AugmentConfig

from .test_trainer import _training_state, tiny_config


def relaxed_side(rng, n=6):
    cell = np.diag([4.0, 5.0, 6.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    return rng.uniform(0, 1, (n, 3)) @ cell, cell


def test_without_strain_or_rattle_the_input_is_the_target_rescaled_to_a_drawn_volume(rng):
    pos, cell = relaxed_side(rng)
    how = AugmentConfig(fraction=1.0, strain=0.0, volume=0.05, rattle_min=0.0, rattle_max=0.0)
    unrelaxed_volume = 1.3 * abs(np.linalg.det(cell))
    new_pos, new_cell = perturbed_input(pos, cell, unrelaxed_volume, rng, how)
    scale = new_cell[0, 0] / cell[0, 0]
    np.testing.assert_allclose(new_cell, scale * cell, rtol=1e-12)
    np.testing.assert_allclose(new_pos, scale * pos, rtol=1e-12, atol=1e-12)  # fractional coordinates kept
    assert 0.95 - 1e-12 <= abs(np.linalg.det(new_cell)) / unrelaxed_volume <= 1.05 + 1e-12


def test_strain_is_symmetric_and_rattle_has_zero_mean(rng):
    pos, cell = relaxed_side(rng, n=9)
    how = AugmentConfig(fraction=1.0, strain=0.04, volume=0.0, rattle_min=0.05, rattle_max=0.05)
    new_pos, new_cell = perturbed_input(pos, cell, abs(np.linalg.det(cell)), rng, how)
    deformation = np.linalg.solve(cell, new_cell)  # L D = L'
    np.testing.assert_allclose(deformation, deformation.T, atol=1e-12)
    assert 0 < np.abs(deformation - np.eye(3)).max() <= 0.04 + 1e-12
    rattle = new_pos - pos @ deformation
    np.testing.assert_allclose(rattle.mean(axis=0), 0.0, atol=1e-12)
    assert np.linalg.norm(rattle, axis=1).max() > 0.01


def test_only_chosen_pairs_change_and_the_graph_is_rebuilt(pair_store, rng):
    store = PairStore(pair_store)
    batch = collate(store, np.arange(4))
    chosen = np.array([False, True, False, True])
    new = perturb_batch(batch, chosen, rng, AugmentConfig(fraction=1.0), store.graph.cutoff,
                        store.graph.max_neighbors, store.graph.self_images)
    ptr = batch.ptr.tolist()
    for b in range(4):
        atoms = slice(ptr[b], ptr[b + 1])
        same_pos = torch.equal(new.pos[atoms], batch.pos[atoms])
        assert same_pos != bool(chosen[b]) and torch.equal(new.cell[b], batch.cell[b]) != bool(chosen[b])
    assert torch.equal(new.target_pos, batch.target_pos) and torch.equal(new.target_cell, batch.target_cell)
    edge_index, shifts, _ = radius_graph(new.pos, new.cell, new.pbc, new.ptr, store.graph.cutoff,
                                         max_neighbors=store.graph.max_neighbors, self_images=store.graph.self_images)
    assert torch.equal(new.edge_index, edge_index) and torch.equal(new.shifts, shifts)


def test_a_pass_restarted_mid_way_draws_the_same_perturbations(pair_store):
    store = PairStore(pair_store)
    indices = np.arange(4)
    how = AugmentConfig(fraction=0.5)
    eligible = np.ones(len(store), dtype=bool)
    graph = (store.graph.cutoff, store.graph.max_neighbors, store.graph.self_images)
    whole_pass = BatchAugmenter(how, eligible, 0, 3, 0, 0, *graph)
    resumed = BatchAugmenter(how, eligible, 0, 3, 2, 0, *graph)
    a = whole_pass(collate(store, indices), 2)
    b = resumed(collate(store, indices), 0)
    assert torch.equal(a.pos, b.pos) and torch.equal(a.cell, b.cell)
    other = whole_pass(collate(store, indices), 1)
    assert not torch.equal(a.pos, other.pos)


def test_source_filter_picks_the_pairs_of_one_source(pair_store, tmp_path):
    from e3relax_fast.train import Trainer

    augment = AugmentConfig(fraction=1.0, source_contains="pairs_unrelaxed.extxyz")
    config = tiny_config(pair_store, tmp_path / "run", data={"store": str(pair_store), "augment": augment})
    eligible = Trainer(config).augment_eligible
    store = PairStore(pair_store)
    assert eligible.tolist() == ["pairs_unrelaxed.extxyz" in source for source in store.sources]
    assert 0 < eligible.sum() < len(store)  # CHGNet-labelled pairs yes, the Perov-5 sample no


def test_augmented_training_resumes_exactly(pair_store, tmp_path):
    data = {"store": str(pair_store), "max_structures_per_batch": 4,
            "augment": AugmentConfig(fraction=0.5, source_contains="pairs_unrelaxed")}
    train(tiny_config(pair_store, tmp_path / "straight", data=data))
    train(tiny_config(pair_store, tmp_path / "split", data=data, run={"max_steps": 3}))
    train(tiny_config(pair_store, tmp_path / "split", data=data), resume=True)
    straight, _ = _training_state(tmp_path / "straight")
    resumed, _ = _training_state(tmp_path / "split")
    for name, value in straight["training"]["model"].items():
        torch.testing.assert_close(resumed["training"]["model"][name], value, rtol=0, atol=0)
    train(tiny_config(pair_store, tmp_path / "plain"))
    unaugmented, _ = _training_state(tmp_path / "plain")  # the perturbations did reach the training
    assert any(not torch.equal(unaugmented["training"]["model"][k], v) for k, v in straight["training"]["model"].items())


def test_bad_augment_settings_are_errors(pair_store, tmp_path):
    with pytest.raises(ValueError, match="data.augment.fraction"):
        tiny_config(pair_store, tmp_path, data={"store": str(pair_store), "augment": AugmentConfig(fraction=1.5)})
    with pytest.raises(ValueError, match="rattle_min <= rattle_max"):
        tiny_config(pair_store, tmp_path, data={"store": str(pair_store),
                                                 "augment": AugmentConfig(rattle_min=0.2, rattle_max=0.1)})
