"""Failure paths of ``e3relax predict``: kills at any point, resume after damage, two jobs at once,
outputs that exist, shards, bad inputs and exit codes. Each case was a way to lose or corrupt data."""

import csv
import os
import shutil
import signal
import subprocess
import sys

import pytest
from ase.io import read, write

from e3relax_fast.cli import main
from e3relax_fast.io.outputs import OutputLock, report_path
from e3relax_fast.io.writers import WRITTEN_LIST

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
#: Runs the command line killed at a chosen write step: the test seam for kills mid-write.
KILLED_PREDICT = os.path.join(os.path.dirname(__file__), "killed_predict.py")
UNTRAINED = ["--untrained", "--preset", "small", "--no-progress", "--max-volume-factor", "inf"]


def examples(tmp_path, count=4):
    folder = tmp_path / "inputs"
    folder.mkdir(exist_ok=True)
    for name in sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".cif"))[:count]:
        shutil.copy(os.path.join(EXAMPLES, name), folder / name)
    return folder


def report_ids(report):
    return [row["id"] for row in csv.DictReader(open(report))]


def test_report_names_follow_the_output_and_the_shard():
    assert report_path("runs/v1.2/out/") == "runs/v1.2/out_report.csv"
    assert report_path("runs/v1.4/out/") == "runs/v1.4/out_report.csv"  # was runs/v1_report.csv for both
    assert report_path("runs/a.b/relaxed.extxyz") == "runs/a.b/relaxed_report.csv"
    assert report_path("out.db", 1, 4) == "out_shard1of4_report.csv"


def test_an_existing_output_is_an_error_unless_resumed_or_overwritten(tmp_path, capsys):
    inputs, output = examples(tmp_path, 2), tmp_path / "out.db"
    assert main(["predict", "-i", str(inputs), "-o", str(output), *UNTRAINED]) == 0
    assert main(["predict", "-i", str(inputs), "-o", str(output), *UNTRAINED]) == 2
    assert "exists from an earlier run" in capsys.readouterr().err
    assert main(["predict", "-i", str(inputs), "-o", str(output), "--overwrite", *UNTRAINED]) == 0
    from ase.db import connect

    assert connect(str(output)).count() == 2  # replaced, not appended
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "dir.extxyz"), *UNTRAINED]) == 0
    os.mkdir(tmp_path / "folder.extxyz")
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "folder.extxyz"), *UNTRAINED]) == 2


def test_resume_repairs_a_half_frame_and_an_unreported_frame(tmp_path):
    inputs, output = examples(tmp_path, 4), tmp_path / "out.extxyz"
    report = tmp_path / "out_report.csv"
    assert main(["predict", "-i", str(inputs), "-o", str(output), *UNTRAINED]) == 0
    rows = open(report).read().splitlines()
    open(report, "w").write("\n".join(rows[:3]) + "\n")  # header + 2 rows: as if killed after frame 3
    text = open(output).read()
    open(output, "w").write(text + text[: len(text) // 7])  # and half a frame more
    assert main(["predict", "-i", str(inputs), "-o", str(output), "--resume", *UNTRAINED]) == 0
    ids = [a.info["id"] for a in read(output, ":")]
    assert sorted(ids) == sorted(report_ids(report)) and len(set(ids)) == 4


def test_resume_after_a_report_killed_before_its_first_row(tmp_path):
    inputs, output = examples(tmp_path, 2), tmp_path / "out.extxyz"
    report = tmp_path / "out_report.csv"
    report.write_text("")
    output.write_text("")
    assert main(["predict", "-i", str(inputs), "-o", str(output), "--resume", *UNTRAINED]) == 0
    assert len(report_ids(report)) == 2  # a header was written; the next resume can read it
    assert main(["predict", "-i", str(inputs), "-o", str(output), "--resume", *UNTRAINED]) == 0
    assert len(read(output, ":")) == 2


def test_a_db_row_without_its_report_row_is_dropped_on_resume(tmp_path):
    from ase.db import connect

    inputs, output = examples(tmp_path, 3), tmp_path / "out.db"
    assert main(["predict", "-i", str(inputs), "-o", str(output), *UNTRAINED]) == 0
    db = connect(str(output), use_lock_file=False)
    extra = db.get(1).toatoms()
    db.write(extra, structure_id="ghost")  # written by a run killed before the report row
    assert main(["predict", "-i", str(inputs), "-o", str(output), "--resume", *UNTRAINED]) == 0
    assert sorted(r.structure_id for r in db.select()) == sorted(report_ids(tmp_path / "out_report.csv"))


@pytest.mark.parametrize("kill_at", ["frame:3", "row:3", "frame:1"])
@pytest.mark.parametrize("suffix", [".extxyz", ".db", "/"])
def test_a_kill_at_any_write_step_then_resume_loses_and_duplicates_nothing(tmp_path, kill_at, suffix):
    inputs, output = examples(tmp_path, 6), str(tmp_path / "out") + suffix
    report = tmp_path / "out_report.csv"
    command = [sys.executable, str(KILLED_PREDICT), kill_at, "predict", "-i", str(inputs), "-o", output, *UNTRAINED]
    killed = subprocess.run(command, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "out_report.csv.lock").exists()  # left behind by the killed job: stale
    assert main(["predict", "-i", str(inputs), "-o", output, "--resume", *UNTRAINED]) == 0
    if suffix == ".extxyz":
        ids = [a.info["id"] for a in read(output, ":")]
    elif suffix == ".db":
        from ase.db import connect

        ids = [r.structure_id for r in connect(output, use_lock_file=False).select()]
    else:
        ids = [os.path.splitext(name)[0] for name in os.listdir(output) if name != WRITTEN_LIST]
    assert len(ids) == len(set(ids)) == 6 and sorted(report_ids(report)) == sorted(ids)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".lock")]


def test_a_second_job_on_the_same_output_is_refused(tmp_path, capsys):
    inputs, output = examples(tmp_path, 1), tmp_path / "out.extxyz"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (tmp_path / "out_report.csv.lock").write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        assert main(["predict", "-i", str(inputs), "-o", str(output), *UNTRAINED]) == 2
        assert f"pid {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    with OutputLock(str(tmp_path / "x")) as lock:  # a dead pid's lock is stale: replaced
        pass
    (tmp_path / "x.lock").write_text(f"{socket.gethostname()} {sleeper.pid}\n")
    with OutputLock(str(tmp_path / "x")) as lock:
        assert "stale" in lock.replaced_stale
    assert not (tmp_path / "x.lock").exists()


def test_shards_keep_their_own_reports_in_one_folder(tmp_path):
    inputs, output = examples(tmp_path, 5), tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert main(["predict", "-i", str(inputs), "-o", str(output) + "/", "--shard", shard, *UNTRAINED]) == 0
    ids = report_ids(tmp_path / "out_shard0of2_report.csv") + report_ids(tmp_path / "out_shard1of2_report.csv")
    assert len(ids) == len(set(ids)) == 5 and len(os.listdir(output)) == 5 + 1  # + WRITTEN_LIST


def test_bad_inputs_are_rows_naming_the_field_and_exit_codes_say_how_it_went(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "partial.cif").write_text(open(os.path.join(os.path.dirname(__file__), "partial.cif")).read())
    shutil.copy(os.path.join(os.path.dirname(__file__), "coincident.cif"), folder / "coincident.cif")
    shutil.copy(os.path.join(EXAMPLES, "train-101-00023.cif"), folder / "dup.cif")
    write(folder / "dup.vasp", read(os.path.join(EXAMPLES, "train-101-00024.cif")), format="vasp")
    from ase import Atoms

    write(folder / "molecule.extxyz", Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    report = tmp_path / "report.csv"
    code = main(["predict", "-i", str(folder), "-o", str(tmp_path / "out") + "/", "--report", str(report),
                 *UNTRAINED])
    assert code == 1  # some failed
    rows = {(r["id"], r["status"]): r for r in csv.DictReader(open(report))}
    assert "'occupancy' is partial" in rows[("partial", "error")]["error"]
    assert "coincident sites" in rows[("coincident", "error")]["error"]  # the CIF reader merged two atoms
    assert "duplicate id" in rows[("dup", "error")]["error"] and ("dup", "ok") in rows
    assert "not periodic" in rows[("molecule", "error")]["error"]
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(folder / "partial.cif", only_bad / "partial.cif")
    assert main(["predict", "-i", str(only_bad), "-o", str(tmp_path / "o2.extxyz"), *UNTRAINED]) == 3


def test_unknown_elements_relaxed_with_warn_say_so_in_the_report(tmp_path):
    from ase.build import bulk

    from e3relax_fast import E3Relaxer

    seen = set(E3Relaxer.from_pretrained().metadata["elements"])
    crystal = bulk("Au", "fcc", a=4.08)
    crystal.numbers[:] = next(z for z in range(1, 119) if z not in seen)  # an element the model never saw
    write(tmp_path / "unseen.extxyz", crystal)
    report = tmp_path / "r.csv"
    assert main(["predict", "-i", str(tmp_path / "unseen.extxyz"), "-o", str(tmp_path / "o.extxyz"),
                 "--report", str(report), "--on-unknown-element", "warn", "--no-progress"]) == 0
    (row,) = csv.DictReader(open(report))
    assert row["status"] == "ok" and "not seen in training" in row["warning"]


def test_folder_outputs_get_safe_unique_names(tmp_path):
    frames = read(os.path.join(os.path.dirname(__file__), "..", "data", "examples_relaxed.extxyz"), ":3")
    for k, atoms in enumerate(frames):
        atoms.info = {"id": ["multi:0", "a b", "a/b"][k]}
    write(tmp_path / "multi.extxyz", frames)
    assert main(["predict", "-i", str(tmp_path / "multi.extxyz"), "-o", str(tmp_path / "out") + "/", *UNTRAINED]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == [WRITTEN_LIST, "a_b.cif", "a_b_2.cif", "multi_0.cif"]


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "(default: 4096)" in capsys.readouterr().out


def test_a_refinement_failure_is_one_row_and_the_calculator_is_built_once(tmp_path):
    from ase.build import bulk

    from e3relax_fast import E3Relaxer
    from e3relax_fast.model.pretrained import untrained_model

    copper = bulk("Cu", "fcc", a=3.7, cubic=True)
    copper.rattle(0.02, seed=1)
    lanthanum = read(os.path.join(EXAMPLES, "train-101-00023.cif"))  # elements EMT does not know
    write(tmp_path / "cu.extxyz", copper)
    write(tmp_path / "la.cif", lanthanum)
    report = tmp_path / "r.csv"
    code = main(["predict", "-i", str(tmp_path / "cu.extxyz"), str(tmp_path / "la.cif"), "-o",
                 str(tmp_path / "o.extxyz"), "--report", str(report), "--refine", "emt", *UNTRAINED])
    assert code == 0
    rows = {r["id"]: r for r in csv.DictReader(open(report))}
    assert rows["cu"]["status"] == "ok" and float(rows["cu"]["refine_energy_eV"]) < 1.0
    # the failed refinement keeps the E3Relax prediction and says why beside it (issue 24, item 4)
    assert rows["la"]["status"] == "ok" and "refinement failed, the E3Relax prediction is kept" in rows["la"]["warning"]
    assert rows["la"]["refine_steps"] == "" and rows["la"]["last_layer_max_move_A"]
    written = {a.info["id"]: a for a in read(tmp_path / "o.extxyz", ":")}
    assert written["cu"].info["refine_energy_eV"] == pytest.approx(float(rows["cu"]["refine_energy_eV"]), abs=1e-5)
    assert "refine_energy_eV" not in written["la"].info
    built = []

    def counting_emt():
        from ase.calculators.emt import EMT

        built.append(1)
        return EMT()

    relaxer = E3Relaxer(untrained_model("small"), device="cpu", max_volume_factor=float("inf"))
    results = list(relaxer.relax_many([copper] * 3, refine=counting_emt))
    assert all(r.ok and r.refined is not None for r in results) and len(built) == 1


def test_db_ids_and_keys_survive_and_pymatgen_json_is_read(tmp_path):
    from ase.db import connect
    from pymatgen.core import Structure

    db = connect(str(tmp_path / "in.db"))
    for k, name in enumerate(sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".cif"))[:2]):
        db.write(read(os.path.join(EXAMPLES, name)), material_id=f"mp-{k}", tag_value=k)
    Structure.from_file(os.path.join(EXAMPLES, "train-101-00024.cif")).to(filename=str(tmp_path / "s.json"))
    output = tmp_path / "out.db"
    assert main(["predict", "-i", str(tmp_path / "in.db"), str(tmp_path / "s.json"), "-o", str(output),
                 *UNTRAINED]) == 0
    rows = {r.structure_id: r for r in connect(str(output), use_lock_file=False).select()}
    assert set(rows) == {"mp-0", "mp-1", "s"}  # the db's own ids, not in:0
    assert rows["mp-1"].tag_value == 1 and rows["mp-1"].material_id == "mp-1"
    assert rows["s"].last_layer_max_move >= 0  # the confidence beside the structure


def test_trajectory_holds_every_layer_of_every_prediction(tmp_path):
    inputs = examples(tmp_path, 2)
    traj = tmp_path / "layers.extxyz"
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "o.extxyz"), "--trajectory", str(traj),
                 *UNTRAINED]) == 0
    frames = read(traj, ":")
    layers = 4  # the small preset
    assert len(frames) == 2 * layers and [f.info["layer"] for f in frames[:layers]] == list(range(1, layers + 1))
    final = {a.info["id"]: a for a in read(tmp_path / "o.extxyz", ":")}
    last = frames[layers - 1]
    assert abs(last.positions - final[last.info["id"]].positions).max() < 1e-6


def test_merge_joins_shards_and_checks_coverage(tmp_path, capsys):
    inputs = examples(tmp_path, 5)
    outputs = []
    for shard in (0, 1):
        out = str(tmp_path / f"part{shard}.extxyz")
        assert main(["predict", "-i", str(inputs), "-o", out, "--shard", f"{shard}/2",
                     "--report", str(tmp_path / f"all_shard{shard}of2_report.csv"), *UNTRAINED]) == 0
        outputs.append(out)
    reports = [str(tmp_path / f"all_shard{k}of2_report.csv") for k in (0, 1)]
    merged = tmp_path / "merged.csv"
    assert main(["merge", *reports, "-o", str(merged), "--structures", *outputs,
                 "--structures-output", str(tmp_path / "all.extxyz")]) == 0
    in_order = sorted(os.path.splitext(n)[0] for n in os.listdir(inputs))
    assert report_ids(merged) == in_order  # the whole input's order, not shard after shard
    assert [a.info["id"] for a in read(tmp_path / "all.extxyz", ":")] == in_order
    assert main(["merge", reports[0], "-o", str(merged)]) == 2
    assert "shard 1 of 2 is missing" in capsys.readouterr().err
    assert main(["merge", reports[0], reports[0], "-o", str(merged)]) == 2
    assert "shard 0 of 2 is given twice" in capsys.readouterr().err
    # a shard of another run (here: another model) is refused
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "other.extxyz"), "--shard", "1/2",
                 "--report", reports[1], "--overwrite", "--no-progress"]) == 0
    assert main(["merge", *reports, "-o", str(merged)]) == 2
    assert "comes from another run" in capsys.readouterr().err


def test_a_shard_parses_only_its_own_files(tmp_path):
    inputs = examples(tmp_path, 3)
    (inputs / "zz_broken.cif").write_text("data_x\nnot a cif\n")  # file 3: shard 1 of 2 owns it
    report0, report1 = tmp_path / "r0.csv", tmp_path / "r1.csv"
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "o0.extxyz"), "--shard", "0/2",
                 "--report", str(report0), *UNTRAINED]) == 0  # never saw the broken file
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "o1.extxyz"), "--shard", "1/2",
                 "--report", str(report1), *UNTRAINED]) == 1
    assert len(report_ids(report0)) == 2 and "zz_broken" in report_ids(report1)


def test_repair_keeps_each_reported_frame_once_as_written(tmp_path):
    """A repeated or unreported frame before the end: the file is rewritten from the kept frames' bytes."""
    from ase.build import bulk

    from e3relax_fast.io.outputs import repair_output

    frames = []
    for structure_id in ("a", "b", "a", "c"):
        atoms = bulk("Cu", "fcc", a=3.6)
        atoms.info["id"] = structure_id
        frames.append(atoms)
    path = tmp_path / "out.extxyz"
    write(path, frames)
    text = path.read_text()
    path.write_text(text + "2\nLattice=")  # and a half-written tail
    assert repair_output(str(path), "extxyz", {"a", "c"}) == 3  # b, the second a, the tail
    assert [f.info["id"] for f in read(path, ":")] == ["a", "c"]
    blocks = text.split("1\nLattice")
    assert path.read_text() == "1\nLattice" + blocks[1] + "1\nLattice" + blocks[4]
