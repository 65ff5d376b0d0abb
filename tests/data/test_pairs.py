"""Pair readers: every source layout, alignment and atom-order checks, Perov-5 ideal structures."""

import csv
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from e3relax_fast.data.pairs import PAIR_SOURCES, pair_sources_table, perov5_ideal, perov5_pairs, read_pairs

DATA = Path(__file__).parent
UNRELAXED, RELAXED = DATA / "pairs_unrelaxed.extxyz", DATA / "pairs_relaxed.extxyz"


def test_extxyz_pairs_are_aligned_by_id_and_grouped_by_prototype():
    records = list(read_pairs(UNRELAXED, RELAXED))
    frames = read(UNRELAXED, ":")
    assert [r.id for r in records] == [f.info["id"] for f in frames]
    assert all(r.ok for r in records)
    assert records[0].group == frames[0].info["prototype"]
    assert records[0].source == f"{UNRELAXED} {RELAXED}"
    np.testing.assert_array_equal(records[0].unrelaxed[1], records[0].relaxed[1])
    np.testing.assert_allclose(records[0].relaxed[0], read(RELAXED, 0).positions)


def test_misaligned_ids_and_atom_order_are_errors_naming_the_pair(tmp_path):
    unrelaxed, relaxed = read(UNRELAXED, ":4"), read(RELAXED, ":4")
    relaxed[1].info["id"] = "somebody-else"
    swapped = relaxed[2]
    order = list(range(len(swapped)))
    order[0], order[-1] = order[-1], order[0]
    relaxed[2] = swapped[order]
    write(tmp_path / "u.extxyz", unrelaxed)
    write(tmp_path / "r.extxyz", relaxed)
    records = list(read_pairs(tmp_path / "u.extxyz", tmp_path / "r.extxyz"))
    assert [r.ok for r in records] == [True, False, False, True]
    assert unrelaxed[1].info["id"] in records[1].error and "not aligned" in records[1].error
    assert unrelaxed[2].info["id"] in records[2].error and "'numbers'" in records[2].error


def test_extxyz_files_of_different_length_are_refused(tmp_path):
    write(tmp_path / "u.extxyz", read(UNRELAXED, ":3"))
    write(tmp_path / "r.extxyz", read(RELAXED, ":2"))
    with pytest.raises(ValueError, match="more frames"):
        list(read_pairs(tmp_path / "u.extxyz", tmp_path / "r.extxyz"))


def test_cif_folder_with_split_csvs_missing_sides_and_broken_files(tmp_path):
    unrelaxed, relaxed = read(UNRELAXED, ":3"), read(RELAXED, ":3")
    ids = ["a1", "b2", "c3"]
    for pair_id, u, r in zip(ids, unrelaxed, relaxed):
        write(tmp_path / f"{pair_id}_unrelaxed.cif", u)
        write(tmp_path / f"{pair_id}_relaxed.cif", r)
    (tmp_path / "c3_relaxed.cif").write_text("data_broken\n_cell_length_a oops\n")
    write(tmp_path / "d4_unrelaxed.cif", unrelaxed[0])  # no relaxed side
    for split, members in (("train", ["a1", "d4"]), ("val", ["b2"])):
        with open(tmp_path / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "energy"])
            writer.writerows([m, 0.0] for m in members)
    records = {r.id: r for r in read_pairs(tmp_path)}
    assert sorted(records) == ["a1", "b2", "c3", "d4"]
    assert records["a1"].ok and records["a1"].split == "train"
    assert records["b2"].ok and records["b2"].split == "val"
    assert not records["c3"].ok and "c3" in records["c3"].error
    assert not records["d4"].ok and "d4_relaxed.cif" in records["d4"].error
    # CIF cells are re-oriented by the reader, but both sides the same way: the atoms still match
    np.testing.assert_array_equal(records["a1"].unrelaxed[1], unrelaxed[0].numbers)


def test_ase_db_pairs(tmp_path):
    from ase.db import connect

    db = connect(tmp_path / "pairs.db")
    cu, nacl = bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.6)
    db.write(cu, pair_id="cu", state="unrelaxed", group="fcc")
    db.write(nacl, pair_id="nacl", state="unrelaxed")
    strained = cu.copy()
    strained.set_cell(cu.cell * 1.02, scale_atoms=True)
    db.write(strained, pair_id="cu", state="relaxed", group="fcc")
    records = list(read_pairs(tmp_path / "pairs.db"))
    assert [r.id for r in records] == ["cu", "nacl"]
    assert records[0].ok and records[0].group == "fcc"
    np.testing.assert_allclose(records[0].relaxed[2], cu.cell.array * 1.02)
    assert not records[1].ok and "no relaxed row" in records[1].error


def test_unknown_source_kinds_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "nothing.db")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="none of the kinds read") as raised:
        read_pairs(tmp_path / "x.txt")
    assert all(kind.given in str(raised.value) for kind in PAIR_SOURCES)  # the one table, not a copy of it


def test_the_pair_source_table_is_what_help_and_the_docs_show(capsys):
    from e3relax_fast.cli import main

    docs = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    assert pair_sources_table() in docs
    with pytest.raises(SystemExit):
        main(["preprocess", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert all(" ".join(kind.given.split()) in shown for kind in PAIR_SOURCES)


def test_perov5_ideal_rounds_to_cubic_sites_and_keeps_species():
    a = 4.21
    frac = np.array([[0.011, 0.998, 0.0], [0.49, 0.51, 0.52], [0.5, 0.0, 0.47], [0.97, 0.5, 0.5], [0.5, 0.5, 0.02]])
    relaxed = (frac * a, np.array([38, 22, 8, 8, 8]), np.eye(3) * a, np.ones(3, bool))
    pos, z, cell, pbc = perov5_ideal(relaxed)
    expected = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0.5, 0]]) * 4.0
    np.testing.assert_allclose(pos, expected, atol=1e-12)
    np.testing.assert_array_equal(z, relaxed[1])
    np.testing.assert_allclose(cell, np.eye(3) * 4.0)
    assert pbc.all()


def test_perov5_csv_pairs():
    records = list(perov5_pairs(DATA / "perov5_sample.csv"))
    assert len(records) == 8 and all(r.ok for r in records)
    first = records[0]
    assert first.id.startswith("perov5-") and first.group  # reduced formula
    np.testing.assert_allclose(first.unrelaxed[2], np.eye(3) * 4.0)
    frac = first.unrelaxed[0] / 4.0
    np.testing.assert_allclose(frac * 2, np.round(frac * 2), atol=1e-12)  # every coordinate 0 or 1/2
    # deterministic: the same pairs twice
    again = list(perov5_pairs(DATA / "perov5_sample.csv"))
    np.testing.assert_array_equal(again[3].unrelaxed[0], records[3].unrelaxed[0])


def test_jsonl_pairs_of_pymatgen_dicts(tmp_path):
    import json

    from pymatgen.io.ase import AseAtomsAdaptor

    unrelaxed, relaxed = read(UNRELAXED, ":2"), read(RELAXED, ":2")
    lines = [json.dumps({"id": u.info["id"], "prototype": u.info["prototype"],
                         "unrelaxed": AseAtomsAdaptor.get_structure(u).as_dict(),
                         "relaxed": AseAtomsAdaptor.get_structure(r).as_dict()}, default=float)
             for u, r in zip(unrelaxed, relaxed)]
    (tmp_path / "pairs.jsonl").write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    records = list(read_pairs(tmp_path / "pairs.jsonl"))
    assert [r.ok for r in records] == [True, False, True]
    assert records[0].id == unrelaxed[0].info["id"] and records[0].group == unrelaxed[0].info["prototype"]
    assert "line 2" in records[1].error
    np.testing.assert_allclose(records[2].relaxed[0], relaxed[1].positions, atol=1e-9)


def test_jsonl_path_frames_follow_their_pair_with_its_group_and_target(tmp_path):
    """make_mp_pairs.py --frames writes each relaxation's intermediate geometries as ``path``: they must
    come back as path pairs of the same group (so they share the pair's split) and the same target."""
    import json

    from pymatgen.io.ase import AseAtomsAdaptor

    from e3relax_fast.data.pairs import PATH_KIND
    from e3relax_fast.data.store import source_name

    u, r = read(UNRELAXED, 0), read(RELAXED, 0)
    halfway = 0.5 * (u.positions + r.positions)
    row = {"id": "mp-504-00000", "prototype": "mp-149", "unrelaxed": AseAtomsAdaptor.get_structure(u).as_dict(),
           "relaxed": AseAtomsAdaptor.get_structure(r).as_dict(),
           "path": [{"step": 7, "positions": halfway.tolist(), "cell": r.cell[:].tolist()},
                    {"step": 9, "positions": halfway[:-1].tolist(), "cell": r.cell[:].tolist()}]}
    folder = tmp_path / "mp_pairs3"
    folder.mkdir()
    (folder / "seed504.jsonl").write_text(json.dumps(row, default=float) + "\n")
    records = list(read_pairs(folder / "seed504.jsonl"))
    assert [(x.id, x.kind, x.ok) for x in records] == [("mp-504-00000", "pair", True),
                                                       ("mp-504-00000-s7", PATH_KIND, True),
                                                       ("mp-504-00000-s9", PATH_KIND, False)]
    pair, frame, bad = records
    assert frame.group == pair.group == "mp-149"
    np.testing.assert_allclose(frame.unrelaxed[0], halfway)
    np.testing.assert_array_equal(frame.unrelaxed[1], pair.unrelaxed[1])
    np.testing.assert_allclose(frame.relaxed[0], pair.relaxed[0])
    assert "mp-504-00000-s9" in bad.error and "positions" in bad.error
    assert source_name(str(folder / "seed504.jsonl"), frame.kind) == "mp_pairs3:path"
    assert source_name(str(folder / "seed504.jsonl"), pair.kind) == "mp_pairs3"
