"""Fresh perturbed inputs in training: what they keep of the target, which pairs get them, and that a
resumed run draws the same ones (with ``data.augment`` and with perturbation pairs in the store)."""

import numpy as np
import pytest
import torch

from e3relax_fast.data.perturb import PerturbConfig, structure_pairs
from e3relax_fast.data.pairs import labelled
from e3relax_fast.data.store import PairStore, write_store
from e3relax_fast.ops import radius_graph
from e3relax_fast.train import train
from e3relax_fast.train.augment import BatchAugmenter
from e3relax_fast.train.config import AugmentConfig

from ..conftest import DATA, fixture_pair_records
from .test_trainer import _training_state, tiny_config


def _augmenter(store, augment=AugmentConfig(fraction=1.0), eligible=None, pass_index=3):
    eligible = np.ones(len(store), dtype=bool) if eligible is None else eligible
    settings = store.meta.get("perturbation")
    return BatchAugmenter(augment, eligible, PerturbConfig(**settings) if settings else None,
                          np.array([k == "perturbation" for k in store.kinds]), 0, pass_index,
                          (store.graph.cutoff, store.graph.max_neighbors, store.graph.self_images))


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """The fixture pairs and the 20 relaxed examples as perturbation pairs, in one store."""
    path = tmp_path_factory.mktemp("mixed") / "store"
    how = PerturbConfig()
    records = [*fixture_pair_records(),
               *labelled(structure_pairs(DATA / "examples_relaxed.extxyz", how), "structures:examples")]
    write_store(records, path, split_fractions={"val": 0.25}, seed=10, progress=False, perturbation=how.to_dict())
    return path


def test_only_eligible_pairs_change_targets_keep_their_lattice_and_the_graph_is_rebuilt(pair_store):
    store = PairStore(pair_store)
    batch = store.batch(np.arange(4))
    eligible = np.zeros(len(store), dtype=bool)
    eligible[[1, 3]] = True
    new = _augmenter(store, eligible=eligible)(batch)
    ptr = batch.ptr.tolist()
    for b in range(4):
        atoms = slice(ptr[b], ptr[b + 1])
        assert torch.equal(new.pos[atoms], batch.pos[atoms]) != bool(eligible[b])
        # the target's cell may only change basis: the same lattice, the same volume
        change = torch.linalg.solve(batch.target_cell[b].T, new.target_cell[b].T).T
        torch.testing.assert_close(change, change.round(), atol=1e-9, rtol=0)
        assert abs(abs(float(torch.det(change))) - 1) < 1e-9
    assert torch.equal(new.target_pos, batch.target_pos)
    edge_index, shifts, _ = radius_graph(new.pos, new.cell, new.pbc, new.ptr, store.graph.cutoff,
                                         max_neighbors=store.graph.max_neighbors, self_images=store.graph.self_images)
    assert torch.equal(new.edge_index, edge_index) and torch.equal(new.shifts, shifts)


def test_a_draw_depends_on_seed_pass_and_pair_only(pair_store):
    store = PairStore(pair_store)
    augment = AugmentConfig(fraction=0.5)
    a = _augmenter(store, augment)(store.batch(np.array([0, 1, 2, 3])))
    b = _augmenter(store, augment)(store.batch(np.array([2, 3])))  # another batch, as after a resume
    n = int(a.ptr[2])
    assert torch.equal(a.pos[n:], b.pos) and torch.equal(a.cell[2:], b.cell)
    other_pass = _augmenter(store, augment, pass_index=4)(store.batch(np.array([0, 1, 2, 3])))
    assert not torch.equal(a.pos, other_pass.pos)


def test_perturbation_pairs_are_always_redrawn_around_their_relaxed_volume(mixed_store):
    store = PairStore(mixed_store)
    chosen = np.array([i for i, k in enumerate(store.kinds) if k == "perturbation"][:6])
    batch = store.batch(chosen)
    new = _augmenter(store, AugmentConfig(fraction=0.0))(batch)  # data.augment off: they change anyway
    ratio = torch.det(new.cell).abs() / torch.det(new.target_cell).abs()
    assert not torch.equal(new.pos, batch.pos)
    assert ((ratio > 0.9 * 0.96 ** 3) & (ratio < 1.1 * 1.04 ** 3)).all()


def assert_resume_is_exact(store, data, tmp_path) -> dict:
    """Train 8 steps straight and 3 + 5 with a resume between; the raw weights must be bit-equal.
    Returns the straight run's weights."""
    train(tiny_config(store, tmp_path / "straight", data=data))
    train(tiny_config(store, tmp_path / "split", data=data, run={"max_steps": 3}))
    train(tiny_config(store, tmp_path / "split", data=data), resume=True)
    straight, _ = _training_state(tmp_path / "straight")
    resumed, _ = _training_state(tmp_path / "split")
    for name, value in straight["training"]["model"].items():
        torch.testing.assert_close(resumed["training"]["model"][name], value, rtol=0, atol=0)
    return straight["training"]["model"]


def test_training_with_perturbation_pairs_resumes_exactly(mixed_store, tmp_path):
    assert_resume_is_exact(mixed_store, {"store": str(mixed_store), "max_structures_per_batch": 4}, tmp_path)


def test_source_filter_picks_the_pairs_of_one_source(pair_store, tmp_path):
    from e3relax_fast.train import Trainer

    augment = AugmentConfig(fraction=1.0, source_contains="pairs_unrelaxed.extxyz")
    config = tiny_config(pair_store, tmp_path / "run", data={"store": str(pair_store), "augment": augment})
    eligible = Trainer(config).data.augment_eligible
    store = PairStore(pair_store)
    assert eligible.tolist() == ["pairs_unrelaxed.extxyz" in source for source in store.sources]
    assert 0 < eligible.sum() < len(store)  # CHGNet-labelled pairs yes, the Perov-5 sample no


def test_augmented_training_resumes_exactly(pair_store, tmp_path):
    data = {"store": str(pair_store), "max_structures_per_batch": 4,
            "augment": AugmentConfig(fraction=0.5, source_contains="pairs_unrelaxed")}
    straight = assert_resume_is_exact(pair_store, data, tmp_path)
    train(tiny_config(pair_store, tmp_path / "plain"))
    unaugmented, _ = _training_state(tmp_path / "plain")  # the perturbations did reach the training
    assert any(not torch.equal(unaugmented["training"]["model"][k], v) for k, v in straight.items())


def test_bad_augment_settings_are_errors(pair_store, tmp_path):
    with pytest.raises(ValueError, match="data.augment.fraction"):
        tiny_config(pair_store, tmp_path, data={"store": str(pair_store), "augment": AugmentConfig(fraction=1.5)})
    with pytest.raises(ValueError, match="rattle_min <= rattle_max"):
        tiny_config(pair_store, tmp_path, data={"store": str(pair_store),
                                                 "augment": AugmentConfig(rattle_min=0.2, rattle_max=0.1)})
