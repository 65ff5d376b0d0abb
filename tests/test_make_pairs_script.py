"""scripts/make_pairs.sh: seeds never repeat the shared sets' or an earlier call's, an mp file resumes by
its seed, and a prototypes file is never resumed (its generator would repeat the file's structures).
A stand-in venv records what the generator would have been asked instead of running CHGNet."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the generator venv's python: `-c "import chgnet"` succeeds; a generator call is recorded
[ "$1" = "-c" ] && exit 0
echo "$@" >> "$CALLS"
"""


@pytest.fixture
def run_script(tmp_path):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(FAKE_PYTHON)
    (venv / "python").chmod(0o755)
    env = {**os.environ, "GEN_VENV": str(tmp_path / "venv"), "PAIRS_DIR": str(tmp_path / "pairs"),
           "CALLS": str(tmp_path / "calls.txt")}

    def run(*args):
        return subprocess.run(["bash", str(ROOT / "scripts" / "make_pairs.sh"), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    return run


def _calls(tmp_path):
    return [line.split() for line in (tmp_path / "calls.txt").read_text().splitlines()]


def test_each_call_takes_a_fresh_seed_past_the_shared_sets(run_script, tmp_path):
    for _ in range(2):
        assert run_script("prototypes", "5").returncode == 0
        (tmp_path / "pairs" / "chgnet_pairs3" / f"seed{303 + len(_calls(tmp_path))}.jsonl").write_text("{}\n")
    assert run_script("mp", "7").returncode == 0
    prototypes, again, mp = _calls(tmp_path)
    assert prototypes[0].endswith("make_pairs.py") and prototypes[1:] == [
        str(tmp_path / "pairs" / "chgnet_pairs3" / "seed304.jsonl"), "304", "5", "3"]
    assert again[2] == "305"  # seed 304's file exists: never reused
    assert mp[0].endswith("make_mp_pairs.py") and mp[2:5] == [str(tmp_path / "pairs" / "mp_pairs3" / "seed504.jsonl"),
                                                              "504", "7"]
    assert mp[mp.index("--frames") + 1] == "3"


def test_an_mp_file_resumes_by_its_seed_and_a_prototypes_file_is_refused(run_script, tmp_path):
    folder = tmp_path / "pairs" / "mp_pairs3"
    folder.mkdir(parents=True)
    (folder / "seed504.jsonl").write_text("{}\n")
    assert run_script("mp", "9", "504").returncode == 0
    assert _calls(tmp_path)[0][3] == "504"
    (tmp_path / "pairs" / "chgnet_pairs3").mkdir()
    (tmp_path / "pairs" / "chgnet_pairs3" / "seed304.jsonl").write_text("{}\n")
    refused = run_script("prototypes", "9", "304")
    assert refused.returncode == 2 and "cannot resume" in refused.stderr
    assert len(_calls(tmp_path)) == 1
    assert run_script("nonsense", "3").returncode == 2
