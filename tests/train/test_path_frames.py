"""Relaxation-path frames (the `*_pairs2/path/` sets): read as their own kind, grouped and split with
their pair, named as their own source, drawn for training but never validated or re-perturbed."""

from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from e3relax_fast.data.pairs import PATH_KIND, read_pairs
from e3relax_fast.data.store import PairStore, source_name, write_store
from e3relax_fast.train import Trainer
from e3relax_fast.train.config import AugmentConfig

from .test_trainer import tiny_config

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def pairs_with_paths(tmp_path_factory):
    """A pair set laid out as ``mp_pairs2/``: the 14 fixture pairs, and ``path/`` with two frames of
    each relaxation (a third and two thirds of the way, ids ``<id>-s<step>``, ``path_step`` set)."""
    root = tmp_path_factory.mktemp("data") / "some_pairs2"
    (root / "path").mkdir(parents=True)
    unrelaxed = read(DATA / "pairs_unrelaxed.extxyz", ":")
    relaxed = read(DATA / "pairs_relaxed.extxyz", ":")
    write(root / "unrelaxed.extxyz", unrelaxed)
    write(root / "relaxed.extxyz", relaxed)
    path_inputs, path_targets = [], []
    for u, r in zip(unrelaxed, relaxed):
        for step, share in ((5, 1 / 3), (10, 2 / 3)):
            frame = u.copy()
            frame.set_cell(u.cell[:] + share * (r.cell[:] - u.cell[:]), scale_atoms=False)
            frame.positions = u.positions + share * (r.positions - u.positions)
            frame.info.update(id=f"{u.info['id']}-s{step}", path_step=step)
            target = r.copy()
            target.info["id"] = frame.info["id"]
            path_inputs.append(frame)
            path_targets.append(target)
    write(root / "path" / "unrelaxed.extxyz", path_inputs)
    write(root / "path" / "relaxed.extxyz", path_targets)
    return root


@pytest.fixture(scope="module")
def path_store(pairs_with_paths, tmp_path_factory):
    root = pairs_with_paths
    sources = [(root / "unrelaxed.extxyz", root / "relaxed.extxyz"),
               (root / "path" / "unrelaxed.extxyz", root / "path" / "relaxed.extxyz")]
    records = (record for source in sources for record in read_pairs(*source))
    out = tmp_path_factory.mktemp("store") / "store"
    write_store(records, out, split_fractions={"val": 0.3}, seed=4, progress=False,
                sources=[f"{u} {r}" for u, r in sources])
    return out


def test_path_frames_are_their_own_kind_grouped_with_their_pair(pairs_with_paths):
    root = pairs_with_paths
    pairs = {r.id: r for r in read_pairs(root / "unrelaxed.extxyz", root / "relaxed.extxyz")}
    frames = list(read_pairs(root / "path" / "unrelaxed.extxyz", root / "path" / "relaxed.extxyz"))
    assert len(frames) == 2 * len(pairs) and all(f.ok and f.kind == PATH_KIND for f in frames)
    assert all(p.kind == "pair" for p in pairs.values())
    for frame in frames:
        pair = pairs[frame.id.rsplit("-s", 1)[0]]
        assert frame.group == pair.group  # the prototype: the split keeps a path with its pair
        np.testing.assert_array_equal(frame.relaxed[0], pair.relaxed[0])
        assert not np.allclose(frame.unrelaxed[0], pair.unrelaxed[0])


def test_a_path_frame_shares_its_pairs_split_and_has_its_own_source_name(path_store):
    store = PairStore(path_store)
    split_of = {store.ids[i]: split for split in ("train", "val") for i in store.indices(split)}
    assert {"train", "val"} <= set(split_of.values())
    for index, pair_id in enumerate(store.ids):
        if store.kinds[index] == PATH_KIND:
            assert split_of[pair_id] == split_of[pair_id.rsplit("-s", 1)[0]]
    names = {source_name(s, k) for s, k in zip(store.sources, store.kinds)}
    assert names == {"some_pairs2", "some_pairs2:path"}


def test_validation_leaves_path_frames_out_and_augmentation_leaves_them_alone(path_store, tmp_path):
    augment = AugmentConfig(fraction=1.0, source_contains="pairs2")
    trainer = Trainer(tiny_config(path_store, tmp_path / "run", data={"max_structures_per_batch": 4, "augment": augment}))
    kinds = np.array(trainer.data.store.kinds)
    assert len(trainer.data.val_indices) > 0 and set(kinds[trainer.data.val_indices]) == {"pair"}
    assert set(trainer.data.val_source.values()) == {"some_pairs2"}
    assert trainer.data.augment_eligible[kinds == "pair"].all() and not trainer.data.augment_eligible[kinds == PATH_KIND].any()
    assert any(kinds[trainer.data.train_indices] == PATH_KIND)  # still trained on
