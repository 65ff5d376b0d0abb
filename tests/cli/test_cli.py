"""The console script, called in-process as ``main([...])`` and once through the installed entry point."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from e3relax_fast.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def test_info_lists_every_backend_with_reasons(capsys):
    assert main(["info", "--model", "paper"]) == 0
    out = capsys.readouterr().out
    assert "74,636,800 parameters" in out
    for op in ("radius_graph", "vector_message"):
        assert op in out
    for backend in ("torch   available", "cpp", "cuda", "triton"):
        assert backend in out
    assert "unavailable:" in out  # no CUDA here, so at least that one says why
    assert "shipped models: e3relax-small (default)" in out


def test_info_runs_as_a_console_script():
    exe = shutil.which("e3relax") or os.path.join(os.path.dirname(sys.executable), "e3relax")
    result = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "op library:" in result.stdout


def test_predict_without_a_model_uses_the_shipped_one(tmp_path, capsys):
    output = tmp_path / "out.extxyz"
    assert main(["predict", "-i", EXAMPLES, "-o", str(output), "--no-progress"]) == 0
    assert "UNTRAINED" not in capsys.readouterr().err
    assert len(read(output, ":")) == 20


def test_predict_with_bfloat16_products_stays_near_float32(tmp_path):
    exact, reduced = tmp_path / "exact.extxyz", tmp_path / "reduced.extxyz"
    assert main(["predict", "-i", EXAMPLES, "-o", str(exact), "--no-progress"]) == 0
    assert main(["predict", "-i", EXAMPLES, "-o", str(reduced), "--no-progress", "--matmul-precision", "bfloat16"]) == 0
    pairs = list(zip(read(exact, ":"), read(reduced, ":")))
    assert len(pairs) == 20
    change = max(abs(a.positions - b.positions).max() for a, b in pairs)
    assert 0 < change < 0.03


def test_predict_refuses_a_model_and_untrained_together(tmp_path, capsys):
    assert main(["predict", "-i", EXAMPLES, "-o", str(tmp_path / "o.extxyz"), "-m", "e3relax-small",
                 "--untrained"]) == 2
    assert "not both" in capsys.readouterr().err


def test_predict_keeps_every_good_structure_and_reports_the_bad_ones(tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".cif"))[:3]
    for name in good:
        shutil.copy(os.path.join(EXAMPLES, name), folder / name)
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\nthis is not a cif\n")
    (folder / "empty.cif").write_text("")
    (folder / "unknown.extxyz").write_text(
        '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\nX 1 1 1\n')
    output = tmp_path / "relaxed.extxyz"
    report = tmp_path / "report.csv"
    code = main(["predict", "-i", str(folder), "-o", str(output), "--untrained", "--preset", "small",
                 "--report", str(report), "--no-progress", "--batch-size", "2", "--max-atoms-per-batch", "20"])
    assert code == 1  # some inputs failed (docs/cli.md, exit codes)
    assert "UNTRAINED MODEL" in capsys.readouterr().err
    relaxed = read(output, ":")
    assert [a.info["id"] for a in relaxed] == [os.path.splitext(n)[0] for n in good]
    rows = {row["id"]: row for row in csv.DictReader(open(report))}
    assert len(rows) == 6
    assert all(rows[os.path.splitext(n)[0]]["status"] == "ok" for n in good)
    assert all(float(rows[os.path.splitext(n)[0]]["shortest_distance_ratio"]) > 0 for n in good)
    for bad in ("broken", "empty", "unknown"):
        assert rows[bad]["status"] == "error" and rows[bad]["error"], rows[bad]
    assert "empty" in rows["empty"]["error"]
    assert "not a known element" in rows["unknown"]["error"]


def test_predict_writes_the_input_geometry_when_a_prediction_pushes_atoms_together(tmp_path, capsys):
    """--overlap-ratio 0.999 refuses the untrained model's predictions that shorten the shortest distance by
    more than 0.1 % (it moves atoms by ~1e-3 Å: some of the examples, not all)."""
    output, report = tmp_path / "out.extxyz", tmp_path / "report.csv"
    argv = ["predict", "-i", EXAMPLES, "-o", str(output), "--untrained", "--preset", "small", "--report", str(report),
            "--no-progress"]
    assert main(argv + ["--overlap-ratio", "0.999"]) == 0
    rows = {row["id"]: row for row in csv.DictReader(open(report))}
    refused = {i for i, row in rows.items() if row["warning"]}
    assert 0 < len(refused) < len(rows) and all("returned the input geometry" in rows[i]["warning"] for i in refused)
    assert f"{len(refused)} with a warning" in capsys.readouterr().out
    inputs = {os.path.splitext(f)[0]: read(os.path.join(EXAMPLES, f)) for f in os.listdir(EXAMPLES) if f.endswith(".cif")}
    for atoms in read(output, ":"):
        same = np.allclose(atoms.positions, inputs[atoms.info["id"]].positions, atol=1e-8)
        assert same == (atoms.info["id"] in refused)


@pytest.mark.parametrize("inputs", [["no/such/file.cif"], ["no_such_*.cif"]])
def test_predict_missing_input_is_a_clear_error(tmp_path, capsys, inputs):
    assert main(["predict", "-i", *inputs, "-o", str(tmp_path / "o.extxyz"), "--untrained"]) == 2
    assert "error:" in capsys.readouterr().err


def test_shards_cover_the_input_exactly_once(tmp_path, capsys):
    ids = []
    for shard in ("0/2", "1/2"):
        output = tmp_path / f"shard{shard[0]}.extxyz"
        assert main(["predict", "-i", EXAMPLES, "-o", str(output), "--untrained", "--preset", "small",
                     "--shard", shard, "--no-progress"]) == 0
        ids.append([a.info["id"] for a in read(output, ":")])
    expected = sorted(os.path.splitext(f)[0] for f in os.listdir(EXAMPLES) if f.endswith(".cif"))
    assert sorted(ids[0] + ids[1]) == expected and not set(ids[0]) & set(ids[1])
    assert main(["predict", "-i", EXAMPLES, "-o", str(tmp_path / "x.extxyz"), "--untrained", "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def copy_examples(folder, count):
    folder.mkdir()
    names = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".cif"))[:count]
    for name in names:
        shutil.copy(os.path.join(EXAMPLES, name), folder / name)
    return [os.path.splitext(n)[0] for n in names]


def test_resume_skips_finished_ids_and_appends(tmp_path):
    folder = tmp_path / "inputs"
    ids = copy_examples(folder, 4)
    output, report = tmp_path / "out.extxyz", tmp_path / "out_report.csv"
    first = [str(folder / f"{i}.cif") for i in ids[:2]]  # the run that got interrupted after two
    assert main(["predict", "-i", *first, "-o", str(output), "--no-progress"]) == 0
    before = read(output, ":")
    assert main(["predict", "-i", str(folder), "-o", str(output), "--resume", "--no-progress"]) == 0
    after = read(output, ":")
    assert [a.info["id"] for a in after] == ids  # the first two kept, the other two appended, none twice
    np.testing.assert_array_equal(after[0].positions, before[0].positions)
    rows = list(csv.DictReader(open(report)))
    assert [r["id"] for r in rows] == ids and all(r["status"] in ("ok", "refused") for r in rows)
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert main(["predict", "-i", str(folder), "-o", str(output), "--resume", "--no-progress"]) == 0
    assert len(read(output, ":")) == 4  # nothing left to do


@pytest.mark.parametrize("output_name, folder_format", [("out.db", "cif"), ("poscars", "poscar"), ("cifs/", "cif")])
def test_outputs_by_extension_and_wrap(tmp_path, output_name, folder_format):
    ids = copy_examples(tmp_path / "inputs", 3)
    output = str(tmp_path / output_name)
    assert main(["predict", "-i", str(tmp_path / "inputs"), "-o", output, "--wrap", "--folder-format", folder_format,
                 "--no-progress"]) == 0
    if output_name.endswith(".db"):
        from ase.db import connect

        rows = list(connect(output).select())
        structures = {row.structure_id: row.toatoms() for row in rows}
    else:
        suffix = ".vasp" if folder_format == "poscar" else ".cif"
        structures = {i: read(os.path.join(output, i + suffix)) for i in ids}
    assert sorted(structures) == sorted(ids)
    for atoms in structures.values():
        fractional = atoms.get_scaled_positions(wrap=False)
        assert (fractional >= -1e-9).all() and (fractional < 1 + 1e-9).all()


def test_refine_with_emt_reports_the_steps_from_prediction_and_from_input(tmp_path):
    from ase.build import bulk
    from ase.io import write

    folder = tmp_path / "metals"
    folder.mkdir()
    copper = bulk("Cu", "fcc", a=3.75) * (2, 1, 1)
    copper.rattle(0.05, seed=3)
    aluminium = bulk("Al", "fcc", a=4.2)
    write(folder / "cu.extxyz", copper)
    write(folder / "al.cif", aluminium)
    output, report = tmp_path / "refined.extxyz", tmp_path / "refined_report.csv"
    assert main(["predict", "-i", str(folder), "-o", str(output), "--refine", "emt", "--fmax", "0.05",
                 "--refine-from-input", "--no-progress"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(open(report))}
    assert set(rows) == {"cu", "al"}
    for row in rows.values():
        assert row["status"] == "ok" and row["refine_converged"] == "True"
        assert int(row["refine_steps"]) > 0 and int(row["refine_steps_from_input"]) > 0
    from ase.calculators.emt import EMT

    for atoms in read(output, ":"):  # the written structures are the refined ones
        atoms.calc = EMT()
        assert np.abs(atoms.get_forces()).max() < 0.05
    assert main(["predict", "-i", str(folder), "-o", str(output), "--refine", "no.such:Calc"]) == 2


def test_predict_reports_the_group_it_kept_and_symprec_none_keeps_none(tmp_path):
    from ase.build import bulk

    from e3relax_fast.metrics import symmetry_of

    folder = tmp_path / "inputs"
    folder.mkdir()
    bulk("NaCl", "rocksalt", a=5.5).write(folder / "nacl.cif")
    for flag, group in (([], "Fm-3m (225)"), (["--symprec", "none"], "")):
        output = tmp_path / f"out{len(flag)}.extxyz"
        assert main(["predict", "-i", str(folder), "-o", str(output), "--no-progress", *flag]) == 0
        with open(tmp_path / f"out{len(flag)}_report.csv") as handle:
            (row,) = list(csv.DictReader(handle))
        assert row["symmetry"] == group
        predicted = read(output)
        found = symmetry_of((predicted.positions, predicted.numbers, predicted.cell[:], None), 1e-3)[0]
        assert (found == 225) == bool(group)


def test_every_option_has_one_help_line_with_at_most_one_default():
    import argparse

    from e3relax_fast.cli import HelpFormatter, build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, parser in commands.items():
        formatter = HelpFormatter(name)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert text, f"{name} {action.option_strings or action.dest} has no help"
            assert text.count("default") <= 1, f"{name} {action.option_strings}: {text}"
        assert "(default: None)" not in parser.format_help() and "(default: False)" not in parser.format_help()


def test_a_cuda_device_without_cuda_is_one_clear_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    code = main(["predict", "-i", EXAMPLES, "-o", str(tmp_path / "o.extxyz"), "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no CUDA device is available here" in err[0]
