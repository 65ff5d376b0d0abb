"""scripts/train_release4.sh on a copy of the tree with stand-ins for `e3relax` and `torchrun`: on a
fresh machine (no runs/, no generated pairs) it builds the store and starts training (it used to end
silently under `set -e` before either), from the committed snapshot where there is one, and resumes
a run folder that holds a run."""

import fcntl
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


def _run(tree, returncode=0, **env):
    calls = tree / "calls.txt"
    result = subprocess.run(["bash", str(tree / "scripts" / "train_release4.sh")], cwd=tree, timeout=60,
                            env={**os.environ, "CALLS": str(calls), **env}, capture_output=True, text=True)
    assert result.returncode == returncode, result.stderr
    return [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []


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


@pytest.fixture
def training(tree):
    """A built store, a run folder with a run, and that run's lock held as the trainer holds it."""
    (tree / "snapshots").mkdir()
    (tree / "snapshots" / "release4.ckpt").write_bytes(b"snapshot")
    _run(tree)
    (tree / "calls.txt").unlink()
    run = tree / "runs" / "release4"
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"run")
    (run / "run.lock").write_text("pid 1 on test")
    handle = open(run / "run.lock")
    fcntl.flock(handle, fcntl.LOCK_EX)  # the trainer's lock (an flock on the file), held here
    yield handle
    handle.close()


def test_a_second_start_beside_a_training_run_is_refused(tree, training):
    assert _run(tree, returncode=1) == []


def test_a_store_built_beside_a_training_run_is_swapped_in_at_the_next_start(tree, training):
    generated = tree / "runs" / "pairs_gen" / "mp_pairs3"
    generated.mkdir(parents=True)
    (generated / "seed504.jsonl").write_text("{}\n" * 3)
    store = tree / "runs" / "store_r4b_n24"
    calls = _run(tree, BUILD_ONLY="1", MIN_NEW="2")
    assert [call[:2] for call in calls] == [["e3relax", "preprocess"]]  # built, nothing trained
    assert any("pairs_gen/mp_pairs3/seed504.jsonl" in word for word in calls[0])
    assert (store / "generated.txt").read_text().split() == ["mp_pairs3", "0"]  # the run's store untouched
    assert (tree / "runs" / "store_r4b_n24.new" / "generated.txt").read_text().split() == ["mp_pairs3", "3"]
    training.close()  # the run has stopped
    (tree / "calls.txt").unlink()
    calls = _run(tree, MIN_NEW="2")
    assert len(calls) == 1 and calls[0][0] == "torchrun" and "--resume" in calls[0]  # swapped, not rebuilt
    assert (store / "generated.txt").read_text().split() == ["mp_pairs3", "3"]
    assert not (tree / "runs" / "store_r4b_n24.new").exists()
    assert "data.source_weights.mp_pairs3=0" not in calls[0]  # the new store holds the generated pairs
