"""Nothing silently dropped or mislabelled (issue 24, item 4): impossible atomic numbers are error rows
and the rest of the file is relaxed; keys an ASE db reserves are kept under another name; one id rule."""

import csv
import os

import numpy as np
from ase import Atoms
from ase.db import connect
from ase.io import write

from e3relax_fast.cli import main
from e3relax_fast.io.structures import read_structures, structure_id_of


def _copper(structure_id: str | None, **info) -> Atoms:
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
    atoms.info.update(info)
    if structure_id is not None:
        atoms.info["id"] = structure_id
    return atoms


def _frame(structure_id: str, second_z: int) -> str:
    """An extxyz frame whose atomic numbers come from its Z column (any integer)."""
    return (f'2\nLattice="3.6 0 0 0 3.6 0 0 0 3.6" Properties=species:S:1:pos:R:3:Z:I:1 id={structure_id} '
            f'pbc="T T T"\nCu 0 0 0 29\nCu 1.8 1.8 0 {second_z}\n')


def test_impossible_atomic_numbers_are_error_rows_and_the_rest_is_relaxed(tmp_path):
    path = tmp_path / "in.extxyz"
    path.write_text(_frame("s0", 119) + _frame("s1", 29) + _frame("s2", 29) + _frame("s3", -3))
    output = tmp_path / "out.extxyz"
    assert main(["predict", "-i", str(path), "-o", str(output), "--no-progress"]) == 1
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out_report.csv"))}
    assert [rows[k]["status"] for k in ("s0", "s1", "s2", "s3")] == ["error", "ok", "ok", "error"]
    assert "'numbers' holds 119" in rows["s0"]["error"] and "'numbers' holds -3" in rows["s3"]["error"]
    assert "Lv" not in rows["s3"]["error"]
    # a resumed run does not stumble on them either: every id is reported, nothing is left to do
    assert main(["predict", "-i", str(path), "-o", str(output), "--resume", "--no-progress"]) == 0


def test_keys_an_ase_db_reserves_are_kept_as_input_keys(tmp_path):
    path = tmp_path / "mp.extxyz"
    write(path, [_copper("mp-30", formula="Cu", natoms=2, band_gap=0.0)])
    assert main(["predict", "-i", str(path), "-o", str(tmp_path / "o.db"), "--no-progress"]) == 0
    row = next(connect(tmp_path / "o.db").select())
    assert row.structure_id == "mp-30" and row.input_formula == "Cu" and row.input_natoms == 2
    assert row.band_gap == 0.0


def test_one_id_rule_for_every_format(tmp_path):
    assert structure_id_of({"mp_id": "mp-1", "material_id": "x"}, "f") == "mp-1"
    assert structure_id_of({"material_id": "mvc-2"}, "f") == "mvc-2"
    assert structure_id_of({"id": "a", "mp_id": "mp-1"}, "f") == "a" and structure_id_of({}, "f") == "f"
    write(tmp_path / "one.extxyz", [_copper(None)])
    write(tmp_path / "many.extxyz", [_copper(None), _copper(None, mp_id="mp-7")])
    with connect(tmp_path / "rows.db") as db:
        db.write(_copper(None), mp_id="mp-8")
        db.write(_copper(None))
    ids = [r.id for r in read_structures([str(tmp_path / n) for n in ("one.extxyz", "many.extxyz", "rows.db")])]
    assert ids == ["one", "many:0", "mp-7", "mp-8", "rows:2"]


def test_subfolders_only_with_recursive_and_broken_links_are_rows_either_way(tmp_path):
    from pathlib import Path

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.cif"))
    top = tmp_path / "inputs"
    (top / "sub").mkdir(parents=True)
    (top / "a.cif").write_bytes(examples[0].read_bytes())
    (top / "sub" / "b.cif").write_bytes(examples[1].read_bytes())
    os.symlink(top / "missing.cif", top / "dangling.cif")
    os.symlink(top / "loop2.cif", top / "loop1.cif")
    os.symlink(top / "loop1.cif", top / "loop2.cif")
    os.symlink(top, top / "sub" / "up")  # a link back up: not followed
    rows = {}
    for name, given, extra in (("flat", [str(top)], []), ("deep", [str(top)], ["--recursive"]),
                               ("glob", [str(top / "*.cif")], [])):
        assert main(["predict", "-i", *given, "-o", str(tmp_path / f"{name}.extxyz"), "--no-progress", *extra]) == 1
        rows[name] = {r["id"]: r for r in csv.DictReader(open(tmp_path / f"{name}_report.csv"))}
    assert sorted(rows["flat"]) == sorted(rows["glob"]) == ["a", "dangling", "loop1", "loop2"]
    assert sorted(rows["deep"]) == ["a", "b", "dangling", "loop1", "loop2"]
    for name in rows:
        for broken in ("dangling", "loop1"):
            assert rows[name][broken]["status"] == "error" and "link leads to no file" in rows[name][broken]["error"]
