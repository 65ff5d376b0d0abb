"""One way in for structures (issue 25, item 1): every format read by every command gives the same ids.

The folder below holds each format the reader knows, with and without id keys; predict, evaluate, merge
and preprocess (``--structures``) are run on it, and the ids each reports must be the reader's.
"""

import csv
import json

import pytest
from ase.build import bulk
from ase.db import connect
from ase.io import write

from e3relax_fast.cli import main
from e3relax_fast.data.store import PairStore
from e3relax_fast.io import read_structures

#: Each file of the folder and the ids the one rule gives its structures.
EXPECTED = {
    "one.extxyz": ["one"],  # a file of one structure: its stem
    "many.extxyz": ["many:0", "mp-7"],  # several: <stem>:<frame>, unless a key names it
    "rows.db": ["mp-8", "rows:2"],  # a database row: its keys, else <stem>:<row id>
    "pmg.json": ["pmg"],  # a pymatgen Structure.as_dict()
    "x.cif": ["x"],
    "POSCAR": ["POSCAR"],
    "table.csv": ["mvc-3", "table:1"],  # a CSV of CIFs: a row's id column, else <stem>:<row>
}


def _crystals():
    copper = bulk("Cu", "fcc", a=3.62, cubic=True)
    salt = bulk("NaCl", "rocksalt", a=5.6)
    copper.rattle(0.02, seed=1)
    salt.rattle(0.02, seed=2)
    return copper, salt


def _cif_text(atoms) -> str:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms).to(fmt="cif")


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats") / "inputs"
    folder.mkdir()
    copper, salt = _crystals()
    write(folder / "one.extxyz", [copper])
    tagged = salt.copy()
    tagged.info["mp_id"] = "mp-7"
    write(folder / "many.extxyz", [copper, tagged])
    with connect(folder / "rows.db") as db:
        db.write(copper, mp_id="mp-8")
        db.write(salt)
    from pymatgen.io.ase import AseAtomsAdaptor

    (folder / "pmg.json").write_text(json.dumps(AseAtomsAdaptor.get_structure(salt).as_dict()))
    write(folder / "x.cif", copper)
    write(folder / "POSCAR", salt, format="vasp")
    with open(folder / "table.csv", "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["material_id", "cif"])
        table.writerow(["mvc-3", _cif_text(copper)])
        table.writerow(["", _cif_text(salt)])
    (folder / "notes.csv").write_text("a,b\n1,2\n")  # a table without a cif column is not an input
    return folder


def _ids_by_file(folder):
    found: dict[str, list[str]] = {}
    for record in read_structures([str(folder)]):
        assert record.structure is not None, record.error
        found.setdefault(record.source.rsplit("/", 1)[-1], []).append(record.id)
    return found


def test_the_reader_gives_each_format_its_ids(every_format):
    assert _ids_by_file(every_format) == EXPECTED


def test_predict_evaluate_merge_and_preprocess_agree_on_every_id(every_format, tmp_path):
    expected = sorted(i for ids in EXPECTED.values() for i in ids)
    out = tmp_path / "out.extxyz"
    assert main(["predict", "-i", str(every_format), "-o", str(out), "--no-progress"]) == 0
    with open(tmp_path / "out_report.csv") as handle:
        reported = [row["id"] for row in csv.DictReader(handle)]
    assert sorted(reported) == expected

    scores = tmp_path / "scores.csv"
    assert main(["evaluate", "--pred", str(out), "--ref", str(every_format), "--input", str(every_format),
                 "--no-symmetry", "-o", str(scores)]) == 0  # ids matched across files and formats
    with open(scores) as handle:
        assert sorted({row["id"] for row in csv.DictReader(handle)}) == expected

    shards = [tmp_path / f"shard{i}.extxyz" for i in range(2)]
    for i, shard in enumerate(shards):
        assert main(["predict", "-i", str(every_format), "-o", str(shard), "--shard", f"{i}/2", "--no-progress"]) == 0
    merged = tmp_path / "merged.csv"
    assert main(["merge", *(str(tmp_path / f"shard{i}_shard{i}of2_report.csv") for i in range(2)),
                 "--structures", *map(str, shards), "--structures-output", str(tmp_path / "all.extxyz"),
                 "-o", str(merged)]) == 0
    with open(merged) as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == reported  # the whole input's order

    store = tmp_path / "store"
    assert main(["preprocess", "--structures", str(every_format), "-o", str(store), "--no-progress"]) == 0
    assert sorted(PairStore(store).ids) == expected
