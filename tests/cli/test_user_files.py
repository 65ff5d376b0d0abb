"""The user's files are never written over (issue 24, item 2): outputs, reports and locks that are or
lie inside an input are refused before anything is written; a folder output keeps files it did not write."""

import csv
import shutil
from pathlib import Path

import pytest

from e3relax_fast.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.cif"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_an_extxyz_given_as_input_and_output_is_refused_even_with_overwrite(tmp_path, inputs, capsys):
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "x.extxyz"), "--no-progress"]) == 0
    data = (tmp_path / "x.extxyz").read_bytes()
    code = main(["predict", "-i", str(tmp_path / "x.extxyz"), "-o", str(tmp_path / "x.extxyz"), "--overwrite",
                 "--no-progress"])
    assert code == 2 and (tmp_path / "x.extxyz").read_bytes() == data
    err = capsys.readouterr().err
    assert "would be written as the input" in err and "x.extxyz" in err


@pytest.mark.parametrize("output", ["same", "inside"])
def test_a_folder_output_in_or_at_the_input_folder_is_refused(tmp_path, inputs, capsys, output):
    before = snapshot(inputs)
    target = str(inputs) + "/" if output == "same" else str(inputs / "relaxed") + "/"
    assert main(["predict", "-i", str(inputs), "-o", target, "--no-progress"]) == 2
    assert snapshot(inputs) == before
    assert "inputs" in capsys.readouterr().err


def test_a_report_named_as_an_input_is_refused(tmp_path, inputs):
    victim = sorted(inputs.glob("*.cif"))[0]
    before = victim.read_bytes()
    code = main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out.extxyz"), "--report", str(victim),
                 "--overwrite", "--no-progress"])
    assert code == 2 and victim.read_bytes() == before and not (tmp_path / "out.extxyz").exists()


def test_a_folder_output_keeps_the_users_own_files_unless_overwrite(tmp_path, inputs):
    out = tmp_path / "out"
    out.mkdir()
    name = sorted(inputs.glob("*.cif"))[0].name
    (out / name).write_text("my notes\n")
    (out / "unrelated.txt").write_text("keep me\n")
    assert main(["predict", "-i", str(inputs), "-o", str(out) + "/", "--no-progress"]) == 1
    assert (out / name).read_text() == "my notes\n" and (out / "unrelated.txt").read_text() == "keep me\n"
    with open(tmp_path / "out_report.csv") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert rows[name[:-4]]["status"] == "error" and "not written by e3relax" in rows[name[:-4]]["error"]
    assert sum(row["status"] in ("ok", "refused") for row in rows.values()) == 2
    # the files this run wrote may be written again by a later run; the user's only with --overwrite
    assert main(["predict", "-i", str(inputs), "-o", str(out) + "/", "--overwrite", "--no-progress"]) == 0
    assert (out / name).read_text() != "my notes\n" and (out / "unrelated.txt").read_text() == "keep me\n"
