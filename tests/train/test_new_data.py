"""Continuing a run on more data (``e3relax train --resume --new-data``): refused without the flag, the
weights and schedule go on with it, and the best score is kept only while the scored validation
pairs are the same (``data.score_sources``)."""

import json
import shutil

import pytest

from e3relax_fast.data.pairs import read_pairs
from e3relax_fast.data.store import write_store
from e3relax_fast.model.checkpoint import read_checkpoint
from e3relax_fast.train import Trainer, train

from .test_path_frames import DATA, pairs_with_paths  # noqa: F401 - the fixture
from .test_trainer import tiny_config


def _store(out, sources):
    records = (record for source in sources for record in read_pairs(*source))
    write_store(records, out, split_fractions={"val": 0.3}, seed=4, progress=False,
                sources=[" ".join(map(str, source)) for source in sources])
    return out


@pytest.fixture(scope="module")
def stores(pairs_with_paths, tmp_path_factory):  # noqa: F811
    """``pairs``: the true pairs; ``more``: the same and their path frames (new training inputs, the
    same validation pairs); ``other``: the pairs and a second validated source (Perov-5)."""
    root, tmp = pairs_with_paths, tmp_path_factory.mktemp("stores")
    true = (root / "unrelaxed.extxyz", root / "relaxed.extxyz")
    path = (root / "path" / "unrelaxed.extxyz", root / "path" / "relaxed.extxyz")
    perov = tmp / "perov5"
    perov.mkdir()
    shutil.copy(DATA / "perov5_sample.csv", perov / "val.csv")
    return {"pairs": _store(tmp / "pairs", [true]), "more": _store(tmp / "more", [true, path]),
            "other": _store(tmp / "other", [true, (perov / "val.csv",)])}


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _first_run(stores, run_dir):
    # 6 of 8 steps: one validation (step 4) sets best_val, the checkpoint at step 6 is mid-pass
    train(tiny_config(stores["pairs"], run_dir, run={"max_steps": 6}))
    return read_checkpoint(run_dir / "last.ckpt")[0]["training"]["state"]


def test_changed_data_is_refused_without_new_data_and_continues_with_it(stores, tmp_path):
    run_dir = tmp_path / "run"
    before = _first_run(stores, run_dir)
    with pytest.raises(ValueError, match="--new-data"):
        Trainer(tiny_config(stores["more"], run_dir), resume=True)
    with pytest.raises(ValueError, match="needs --resume"):
        Trainer(tiny_config(stores["more"], tmp_path / "fresh"), new_data=True)
    same = Trainer(tiny_config(stores["pairs"], run_dir), resume=True, new_data=True)
    assert same.state == {**before, "stopped": ""}  # nothing changed: an exact resume
    same.close()
    trainer = Trainer(tiny_config(stores["more"], run_dir), resume=True, new_data=True)
    assert trainer.state["step"] == before["step"] == 6
    assert trainer.state["pass"] == before["pass"] + 1 and trainer.state["batch_in_pass"] == 0
    assert trainer.state["best_val"] == before["best_val"] < float("inf")  # same validation pairs
    assert "path" in {trainer.data.store.kinds[i] for i in trainer.data.train_indices}
    summary = trainer.train()
    trainer.close()
    assert summary["step"] == 8
    event = [r for r in _log(run_dir) if r.get("event") == "new data"]
    assert len(event) == 1 and event[0]["step"] == 6 and event[0]["best_val_kept"] is True
    assert any("data.store" in change for change in event[0]["changes"])


def test_best_score_is_kept_only_while_the_scored_validation_pairs_are_the_same(stores, tmp_path):
    _first_run(stores, tmp_path / "all")
    trainer = Trainer(tiny_config(stores["other"], tmp_path / "all"), resume=True, new_data=True)
    assert trainer.state["best_val"] == float("inf")  # val_score now averages a second source too
    assert sorted(trainer.data.score_names) == ["perov5", "some_pairs2"]
    _first_run(stores, tmp_path / "named")
    named = tiny_config(stores["other"], tmp_path / "named", data={"store": str(stores["other"]),
                                                                    "max_structures_per_batch": 4,
                                                                    "score_sources": ["some_pairs2"]})
    trainer = Trainer(named, resume=True, new_data=True)
    assert trainer.state["best_val"] < float("inf") and trainer.data.score_names == ["some_pairs2"]
    metrics = trainer.validate()
    assert metrics["val_score"] == metrics["val_ratio/some_pairs2"] and "val_ratio/perov5" in metrics


def test_an_unknown_score_source_is_an_error_naming_the_sources(stores, tmp_path):
    config = tiny_config(stores["pairs"], tmp_path / "run", data={"store": str(stores["pairs"]),
                                                                   "score_sources": ["nowhere"]})
    with pytest.raises(ValueError, match=r"score_sources names \['nowhere'\].*some_pairs2"):
        Trainer(config)


def test_a_store_rebuilt_in_place_with_more_pairs_needs_new_data(stores, tmp_path):
    """The config names the same folder, but the pairs in it changed: resuming at the saved batch
    position would index another order, so it is refused like a changed setting."""
    store = tmp_path / "store"
    shutil.copytree(stores["pairs"], store)
    run_dir = tmp_path / "run"
    _first_run({"pairs": store}, run_dir)
    shutil.rmtree(store)
    shutil.copytree(stores["more"], store)
    with pytest.raises(ValueError, match=r"--new-data.*data.store \(contents\)"):
        Trainer(tiny_config(store, run_dir), resume=True)
    trainer = Trainer(tiny_config(store, run_dir), resume=True, new_data=True)
    assert trainer.state["batch_in_pass"] == 0 and trainer.state["best_val"] < float("inf")


def test_a_second_job_on_the_same_run_folder_is_refused_until_the_first_ends(stores, tmp_path):
    first = Trainer(tiny_config(stores["pairs"], tmp_path / "run"))
    with pytest.raises(RuntimeError, match=r"being trained by another process \(pid \d+"):
        Trainer(tiny_config(stores["pairs"], tmp_path / "run"))
    assert not (tmp_path / "run" / "last.ckpt").exists()
    first.close()
    Trainer(tiny_config(stores["pairs"], tmp_path / "run")).close()


def test_a_killed_job_leaves_no_lock_behind(stores, tmp_path):
    import os
    import subprocess
    import sys

    script = ("import os, signal, sys\n"
              "from e3relax_fast.train import Trainer\n"
              "from tests.train.test_trainer import tiny_config\n"
              "Trainer(tiny_config(sys.argv[1], sys.argv[2]))\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script, str(stores["pairs"]), str(tmp_path / "run")], cwd=root,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert "pid" in (tmp_path / "run" / "run.lock").read_text()  # its lock file is still there, unheld
    Trainer(tiny_config(stores["pairs"], tmp_path / "run")).close()
