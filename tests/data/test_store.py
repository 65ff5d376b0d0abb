"""The pair store: plain arrays that round-trip, graphs from our op, splits by group, bad pairs skipped."""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from e3relax_fast.data.convert import reduce_basis
from e3relax_fast.data.pairs import PairRecord, read_pairs
from e3relax_fast.data.store import GraphSettings, PairStore, assign_splits, write_store
from e3relax_fast.ops import radius_graph

DATA = Path(__file__).parent


@pytest.fixture
def store_path(pair_store):
    return pair_store


def test_store_round_trips_the_pairs(store_path, pair_records):
    store = PairStore(store_path)
    records = list(pair_records())
    assert len(store) == len(records) == 22
    assert store.ids == [r.id for r in records]
    assert store.meta["graph"] == GraphSettings().to_dict()
    for index in (0, 5, 14, 21):
        record, pair = records[index], store.pair(index)
        np.testing.assert_array_equal(pair["pos_unrelaxed"], record.unrelaxed[0])
        # both cells in the reduced basis of the unrelaxed lattice, by one integer change of basis
        reduced, change = reduce_basis(record.unrelaxed[2])
        np.testing.assert_array_equal(pair["cell_unrelaxed"], reduced)
        np.testing.assert_allclose(pair["cell_relaxed"], change @ record.relaxed[2], rtol=0, atol=1e-12)
        assert abs(round(np.linalg.det(change))) == 1 and np.linalg.det(reduced) > 0
        np.testing.assert_array_equal(pair["z"], record.unrelaxed[1])
        # the relaxed side is unwrapped: same atom up to a lattice translation, and near the input
        frac = np.linalg.solve(record.relaxed[2].T, (pair["pos_relaxed"] - record.relaxed[0]).T).T
        np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)
        images = np.array(list(itertools.product(range(-2, 3), repeat=3))) @ record.relaxed[2]  # [125, 3]
        nearest = np.linalg.norm(pair["pos_relaxed"][:, None] + images - pair["pos_unrelaxed"][:, None], axis=2)
        np.testing.assert_allclose(nearest.min(axis=1), np.linalg.norm(pair["pos_relaxed"] - pair["pos_unrelaxed"],
                                                                        axis=1), atol=1e-12)
        # the graph is our op's, on the unrelaxed structure
        pos = torch.from_numpy(record.unrelaxed[0])
        edge_index, shifts, _ = radius_graph(pos, torch.from_numpy(reduced)[None],
                                             torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, len(pos)]),
                                             6.0, 50, "paper")
        np.testing.assert_array_equal(pair["edges"], edge_index.t().numpy())
        np.testing.assert_array_equal(pair["shifts"], shifts.numpy())


def test_store_files_are_plain_arrays_and_json(store_path):
    meta = json.loads((store_path / "store.json").read_text())
    for name, spec in meta["arrays"].items():
        raw = np.fromfile(store_path / f"{name}.bin", dtype=spec["dtype"])
        assert raw.size == int(np.prod(spec["shape"]))
    assert not list(store_path.glob("*.pkl")) and not list(store_path.glob("*.pt"))


def test_splits_keep_groups_together_and_are_seeded(store_path):
    store = PairStore(store_path)
    val = set(store.indices("val").tolist())
    train = set(store.indices("train").tolist())
    assert val and train and not val & train and len(val | train) == len(store)
    for group in set(store.groups):
        members = {i for i, g in enumerate(store.groups) if g == group}
        assert members <= val or members <= train, group
    groups = [f"g{i % 7}" for i in range(70)]
    first = assign_splits(groups, [""] * 70, {"val": 0.3}, seed=5)
    assert first == assign_splits(groups, [""] * 70, {"val": 0.3}, seed=5)
    assert first != assign_splits(groups, [""] * 70, {"val": 0.3}, seed=6)
    assert set(first) == {"train", "val"}
    # a group's split does not depend on the other pairs: adding data moves nothing
    grown = assign_splits(groups + [f"new{i}" for i in range(50)], [""] * 120, {"val": 0.3}, seed=5)
    assert grown[:70] == first
    many = assign_splits([f"g{i}" for i in range(4000)], [""] * 4000, {"val": 0.1, "test": 0.05}, seed=0)
    assert abs(many.count("val") / 4000 - 0.1) < 0.02 and abs(many.count("test") / 4000 - 0.05) < 0.015
    given = ["test"] + [""] * 69
    assert assign_splits(groups, given, {"val": 0.3}, seed=5)[0] == "test"


def test_bad_pairs_are_recorded_and_skipped(tmp_path):
    good = list(read_pairs(DATA / "pairs_unrelaxed.extxyz", DATA / "pairs_relaxed.extxyz"))[:3]
    nan_pos = good[1].unrelaxed[0].copy()
    nan_pos[0, 0] = np.nan
    broken = PairRecord("nan-pair", (nan_pos, *good[1].unrelaxed[1:]), good[1].relaxed, "g")
    unreadable = PairRecord("unreadable", error="pair 'unreadable': cannot read its CIF files")
    meta = write_store([good[0], broken, unreadable, good[2]], tmp_path / "s", progress=False)
    assert meta["num_pairs"] == 2 and meta["num_failures"] == 2
    with open(tmp_path / "s" / "failures.csv", newline="") as handle:
        failures = {row["id"]: row["error"] for row in csv.DictReader(handle)}
    assert "nan-pair" in failures and "pos" in failures["nan-pair"] and "unrelaxed" in failures["nan-pair"]
    assert "unreadable" in failures
    assert PairStore(tmp_path / "s").ids == [good[0].id, good[2].id]


def test_existing_store_is_not_overwritten_silently(store_path, pair_records):
    with pytest.raises(ValueError, match="exists"):
        write_store(pair_records(), store_path, progress=False)


def test_worker_processes_write_the_same_store(tmp_path, store_path, pair_records):
    write_store(pair_records(), tmp_path / "w", split_fractions={"val": 0.25}, seed=10, progress=False,
                workers=2, chunk_size=5, sources=["fixture"])
    for name in ("edges", "shifts", "pos_relaxed", "split"):
        assert (tmp_path / "w" / f"{name}.bin").read_bytes() == (store_path / f"{name}.bin").read_bytes()


def test_not_a_store():
    with pytest.raises(FileNotFoundError, match="e3relax preprocess"):
        PairStore(DATA)
