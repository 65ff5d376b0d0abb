"""Draws per pass by source (``data.source_weights``): how often each pair is drawn, determinism, errors."""

import numpy as np
import pytest

from e3relax_fast.data.store import PairStore, source_name
from e3relax_fast.train import TrainConfig, Trainer
from e3relax_fast.train.batching import BatchOrder

from .test_trainer import tiny_config


def _appearances(order: BatchOrder, pass_index: int, size: int) -> np.ndarray:
    drawn = np.concatenate(order.batches(pass_index))
    return np.bincount(drawn, minlength=size)


def test_weights_repeat_thin_or_drop_pairs_each_pass():
    indices = np.arange(300)
    weights = np.repeat([2.0, 0.25, 0.0], 100)
    order = BatchOrder(indices, np.full(300, 4), 8, 0, seed=3, draws=weights)
    counts = np.stack([_appearances(order, p, 300) for p in range(40)])
    assert (counts[:, :100] == 2).all()  # whole weights: exactly that many draws
    assert set(np.unique(counts[:, 100:200])) == {0, 1}
    assert counts[:, 100:200].mean() == pytest.approx(0.25, abs=0.03)  # a fresh quarter every pass
    assert (counts[:, 200:] == 0).all()
    again = BatchOrder(indices, np.full(300, 4), 8, 0, seed=3, draws=weights)
    assert all(np.array_equal(a, b) for a, b in zip(order.batches(7), again.batches(7)))


def test_without_weights_the_order_is_unchanged():
    plain = BatchOrder(np.arange(50), np.full(50, 3), 4, 0, seed=1)
    ones = BatchOrder(np.arange(50), np.full(50, 3), 4, 0, seed=1, draws=np.ones(50))
    assert sorted(np.concatenate(plain.batches(0)).tolist()) == list(range(50))
    assert sorted(np.concatenate(ones.batches(0)).tolist()) == list(range(50))


def test_trainer_weights_pairs_by_source_name_and_names_unknown_sources(pair_store, tmp_path):
    store = PairStore(pair_store)
    names = {source_name(s, k) for s, k in zip(store.sources, store.kinds)}
    assert names == {"data"}
    trainer = Trainer(tiny_config(pair_store, tmp_path / "run", data={"max_structures_per_batch": 4,
                                                                      "source_weights": {"data": 3.0}}))
    assert (trainer.data.order.draws == 3.0).all()
    assert len(np.concatenate(trainer.data.order.batches(0))) == 3 * len(trainer.data.train_indices)
    with pytest.raises(ValueError, match=r"\[.nowhere.\].*data"):
        Trainer(tiny_config(pair_store, tmp_path / "other", data={"source_weights": {"nowhere": 1.0}}))
    with pytest.raises(ValueError, match="source_weights.data"):
        tiny_config(pair_store, tmp_path, data={"source_weights": {"data": -1.0}})
    # a recipe may name, with weight 0, a source this store lacks (generated pairs not made yet)
    absent = Trainer(tiny_config(pair_store, tmp_path / "absent", data={"source_weights": {"data": 1.0, "nowhere": 0.0}}))
    assert (absent.data.order.draws == 1.0).all()


def test_source_weights_read_from_yaml_and_overrides_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  source_weights:\n    mp:perturbed: 1\n")
    config = TrainConfig.from_yaml(path, ["data.source_weights.perov5=0.5"])
    assert config.data.source_weights == {"mp:perturbed": 1.0, "perov5": 0.5}
    with pytest.raises(ValueError, match="data.source_weights: expected a mapping"):
        TrainConfig.from_dict({"data": {"source_weights": [1.0]}})
