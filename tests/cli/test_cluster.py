"""Safe on a cluster (issue 24, item 3): SIGTERM and SIGINT finish the structure being written, its
report row and the locks, then exit 143 / 130; another host's lock lapses after its lease; a half-written
report row is cut on --resume; a full disk is one line and its own exit code."""

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.io import read, write

from e3relax_fast.cli import EXIT_INTERNAL, main
from e3relax_fast.io.outputs import LOCK_LEASE_S

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def many(tmp_path) -> Path:
    """300 small crystals in one extxyz (the examples, repeated under their own ids)."""
    frames = []
    examples = [read(p) for p in sorted(EXAMPLES.glob("*.cif"))]
    for k in range(300):
        atoms = examples[k % len(examples)].copy()
        atoms.info = {"id": f"c{k:03d}"}
        frames.append(atoms)
    write(tmp_path / "many.extxyz", frames)
    return tmp_path / "many.extxyz"


def rows_of(report: Path) -> list[dict]:
    with open(report, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("sent,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_row_releases_the_locks_and_resume_completes(tmp_path, many, sent, code):
    output, report = tmp_path / "out.extxyz", tmp_path / "out_report.csv"
    command = [sys.executable, "-m", "e3relax_fast.cli", "predict", "-i", str(many), "-o", str(output),
               "--batch-size", "4", "--no-progress"]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and (not report.exists() or len(report.read_text().splitlines()) < 4):
        time.sleep(0.01)
    job.send_signal(sent)
    _, err = job.communicate(timeout=120)
    assert job.returncode == code, err
    assert "Traceback" not in err and "--resume continues" in err
    assert not list(tmp_path.glob("*.lock"))
    done = [row["id"] for row in rows_of(report)]
    assert 3 <= len(done) < 300 and [a.info["id"] for a in read(output, ":")] == done
    assert main(["predict", "-i", str(many), "-o", str(output), "--resume", "--no-progress"]) == 0
    ids = [a.info["id"] for a in read(output, ":")]
    assert sorted(ids) == [f"c{k:03d}" for k in range(300)] and len(rows_of(report)) == 300


def test_another_hosts_lock_holds_for_its_lease_then_lapses(tmp_path, capsys):
    inputs = str(EXAMPLES / "train-101-00023.cif")
    output, lock = tmp_path / "out.extxyz", tmp_path / "out_report.csv.lock"
    lock.write_text("some-other-node 4242\n")
    assert main(["predict", "-i", inputs, "-o", str(output), "--no-progress"]) == 2
    assert "--break-lock" in capsys.readouterr().err and lock.exists()
    stale = time.time() - LOCK_LEASE_S - 5
    os.utime(lock, (stale, stale))
    assert main(["predict", "-i", inputs, "-o", str(output), "--no-progress"]) == 0
    assert "not renewed" in capsys.readouterr().err and not lock.exists()
    lock.write_text("some-other-node 4242\n")
    assert main(["predict", "-i", inputs, "-o", str(output), "--overwrite", "--break-lock", "--no-progress"]) == 0
    assert "taken over" in capsys.readouterr().err


def test_a_half_written_report_row_is_cut_and_done_again(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.cif"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    output, report = tmp_path / "out.extxyz", tmp_path / "out_report.csv"
    assert main(["predict", "-i", str(folder), "-o", str(output), "--no-progress"]) == 0
    data = report.read_bytes()
    start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    report.write_bytes(data[:start + 12])  # killed while writing the last row
    inode, before = output.stat().st_ino, output.read_bytes()
    assert main(["predict", "-i", str(folder), "-o", str(output), "--resume", "--no-progress"]) == 0
    ids = [row["id"] for row in rows_of(report)]
    assert len(ids) == len(set(ids)) == 4 and [a.info["id"] for a in read(output, ":")] == ids
    # the unreported frame was cut off the end and written again: the file was not rewritten
    assert output.stat().st_ino == inode
    kept = before.rfind(b"\n", 0, before.rfind(b"id=")) - 1  # the three frames before the last
    assert output.read_bytes()[:kept] == before[:kept]


def test_a_full_disk_is_one_line_naming_the_path_and_its_own_exit_code(tmp_path, capsys, monkeypatch):
    from e3relax_fast.io import writers

    def full(self, structure_id, atoms):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.output)

    monkeypatch.setattr(writers.StructureWriter, "write", full)
    output = tmp_path / "out.extxyz"
    code = main(["predict", "-i", str(EXAMPLES / "train-101-00023.cif"), "-o", str(output), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_INTERNAL == 4
    assert err[-1] == f"e3relax predict: cannot write {output}: No space left on device"
    assert not (tmp_path / "out_report.csv.lock").exists()


def test_a_multi_frame_file_is_streamed_and_a_broken_tail_is_one_error_row(tmp_path, many):
    from e3relax_fast.io import read_structures

    text = many.read_text()
    broken = tmp_path / "broken.extxyz"
    cut = text.index("c005")  # frames 0-4 whole, then a header cut short
    broken.write_text(text[:cut] + "c005 pbc=\n")
    stream = read_structures([str(broken)])
    first = next(stream)  # a record comes out before the file has been read to its end
    assert first.id == "c000" and first.structure is not None
    rest = list(stream)
    assert [r.id for r in rest[:4]] == ["c001", "c002", "c003", "c004"]
    assert len(rest) == 5 and rest[-1].structure is None and "from frame 5 on" in rest[-1].error
    output = tmp_path / "out.extxyz"
    assert main(["predict", "-i", str(broken), "-o", str(output), "--shard", "1/2",
                 "--report", str(tmp_path / "r_shard1of2_report.csv"), "--no-progress"]) == 1
    ids = [row["id"] for row in rows_of(tmp_path / "r_shard1of2_report.csv")]
    assert sorted(ids) == ["broken:5", "c001", "c003"]  # this shard's frames of the one file, and the tail
