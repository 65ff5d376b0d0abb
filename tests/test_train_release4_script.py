"""scripts/train_release4.sh on a copy of the tree with stand-ins for `e3relax` and `torchrun`: on a
fresh machine (no runs/, no generated pairs) it builds the store and starts training (it used to end
silently under `set -e` before either), from the committed snapshot where there is one, and resumes
a run folder that holds a run."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """#!/usr/bin/env bash
# stands in for {name}: records its arguments; `preprocess -o DIR` leaves a store.json there
echo "{name} $*" >> "$CALLS"
if [ "$1" = preprocess ]; then
  while [ $# -gt 0 ]; do [ "$1" = -o ] && mkdir -p "$2" && echo '{{}}' > "$2/store.json"; shift; done
fi
"""


@pytest.fixture
def tree(tmp_path):
    """A tree with the script, a venv of stand-ins and release 3's weights in runs/ (no git needed)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "train_release4.sh", root / "scripts")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    for name in ("e3relax", "torchrun"):
        (bin_dir / name).write_text(STAND_IN.format(name=name))
        (bin_dir / name).chmod(0o755)
    (root / "runs").mkdir()
    (root / "runs" / "release3.ckpt").write_bytes(b"weights")
    return root


def _run(tree):
    calls = tree / "calls.txt"
    result = subprocess.run(["bash", str(tree / "scripts" / "train_release4.sh")], cwd=tree, timeout=60,
                            env={**os.environ, "CALLS": str(calls)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in calls.read_text().splitlines()]


def test_a_fresh_machine_builds_the_store_and_starts_from_release_3(tree):
    preprocess, torchrun = _run(tree)
    assert preprocess[:2] == ["e3relax", "preprocess"] and "runs/store_r4b_n24.new" in preprocess
    assert not any("pairs_gen" in word for word in preprocess)  # no generated file to add yet
    assert (tree / "runs" / "store_r4b_n24" / "store.json").exists()
    assert (tree / "runs" / "store_r4b_n24" / "generated.txt").read_text().split() == ["mp_pairs3", "0"]
    assert torchrun[0] == "torchrun" and "--resume" not in torchrun and "--continue-from" not in torchrun
    assert "data.source_weights.mp_pairs3=0" in torchrun  # a source the store lacks is not drawn


def test_a_fresh_machine_goes_on_from_the_committed_snapshot(tree):
    (tree / "snapshots").mkdir()
    (tree / "snapshots" / "release4.ckpt").write_bytes(b"snapshot")
    torchrun = _run(tree)[-1]
    assert torchrun[torchrun.index("--continue-from") + 1] == "snapshots/release4.ckpt"
    assert "--resume" not in torchrun


def test_a_run_folder_with_a_run_is_resumed_on_the_store_as_built(tree):
    (tree / "snapshots").mkdir()
    (tree / "snapshots" / "release4.ckpt").write_bytes(b"snapshot")
    _run(tree)
    (tree / "runs" / "release4").mkdir()
    (tree / "runs" / "release4" / "last.ckpt").write_bytes(b"run")
    (tree / "calls.txt").unlink()
    calls = _run(tree)
    assert len(calls) == 1  # the store stands: not rebuilt
    assert calls[0][0] == "torchrun" and "--resume" in calls[0] and "--new-data" in calls[0]
    assert "--continue-from" not in calls[0]
