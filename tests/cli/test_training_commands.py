"""``e3relax preprocess`` -> ``train`` (and ``--resume``) -> ``evaluate``, as a user runs them."""

import contextlib
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from ase.io import read, write

from e3relax_fast.cli import main
from e3relax_fast.train import TrainConfig

DATA = Path(__file__).parent.parent / "data"


def test_preprocess_train_resume_evaluate(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["preprocess", "--pairs", str(DATA / "pairs_unrelaxed.extxyz"), str(DATA / "pairs_relaxed.extxyz"),
                 "--pairs", str(DATA / "perov5_sample.csv"), "-o", str(store), "--val-fraction", "0.3",
                 "--no-progress"]) == 0
    assert "wrote 22 pairs" in capsys.readouterr().out
    assert json.loads((store / "store.json").read_text())["split_counts"]["val"] > 0

    config = TrainConfig().replace(model={"hidden_channels": 16, "num_layers": 2, "num_rbf": 16},
                                   data={"store": str(store)},
                                   run={"dir": str(tmp_path / "run"), "steps_per_epoch": 2, "progress": False})
    config.to_yaml(tmp_path / "train.yaml")
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--set", "run.max_steps=2",
                 "--set", "optim.lr=2e-3"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["lr"] == 2e-3
    # the same run again without --resume is refused; with it, it continues
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--set", "optim.lr=2e-3"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--set", "run.max_steps=4",
                 "--set", "optim.lr=2e-3", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4

    out_csv = tmp_path / "eval.csv"
    assert main(["evaluate", "-m", str(tmp_path / "run" / "best.ckpt"), "--store", str(store), "--split", "val",
                 "-o", str(out_csv), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "StructureMatcher" in printed and "symprec" in printed
    rows = list(csv.DictReader(open(out_csv)))
    assert {r["method"] for r in rows} == {"model", "dummy"}
    assert len(rows) == 2 * json.loads((store / "store.json").read_text())["split_counts"]["val"]
    summary = list(csv.DictReader(open(tmp_path / "eval_summary.csv")))
    assert any(s["method"] == "dummy" and s["metric"] == "coord_mae" and float(s["p90"]) > 0 for s in summary)
    # the store path computes the model's confidence from its last two layers
    assert all(float(r["last_layer_max_move"]) >= 0 for r in rows if r["method"] == "model")
    assert main(["evaluate", "-m", str(tmp_path / "run" / "best.ckpt"), "--store", str(store), "--split", "all",
                 "--per-source", "3", "--symprec", "none", "-o", str(tmp_path / "few.csv"), "--no-progress"]) == 0
    few = list(csv.DictReader(open(tmp_path / "few.csv")))
    groups = {r["group"] for r in few}
    assert len(few) == 2 * 3 * len(groups)  # three pairs of each source, model and Dummy

    # the trained checkpoint predicts through e3relax predict, without the untrained banner
    inputs = tmp_path / "inputs.extxyz"
    write(inputs, read(DATA / "pairs_unrelaxed.extxyz", ":3"))
    seen = set(json.loads(torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)["metadata"])["elements"])
    unseen = [a for a in read(inputs, ":") if not set(a.numbers) <= seen]
    expected_code = 0 if not unseen else (3 if len(unseen) == 3 else 1)  # docs/cli.md, exit codes
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "pred.extxyz"), "-m",
                 str(tmp_path / "run" / "best.ckpt"), "--no-progress", "--report", str(tmp_path / "r.csv")]) == expected_code
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.out + captured.err
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert sum(r["status"] == "error" and "not seen in training" in r["error"] for r in rows) == len(unseen)
    with pytest.warns(UserWarning, match="not seen in training") if unseen else contextlib.nullcontext():
        assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "pred.extxyz"), "-m",
                     str(tmp_path / "run" / "best.ckpt"), "--no-progress", "--on-unknown-element", "warn",
                     "--overwrite"]) == 0
    assert len(read(tmp_path / "pred.extxyz", ":")) == 3
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "p2.extxyz"), "-m",
                 str(tmp_path / "run" / "best.ckpt"), "--untrained"]) == 2


def test_evaluate_files_by_id(tmp_path, capsys):
    relaxed = read(DATA / "pairs_relaxed.extxyz", ":4")
    unrelaxed = read(DATA / "pairs_unrelaxed.extxyz", ":4")
    write(tmp_path / "ref.extxyz", relaxed)
    write(tmp_path / "in.extxyz", unrelaxed)
    write(tmp_path / "pred.extxyz", list(reversed(relaxed)))  # order differs; ids align them
    assert main(["evaluate", "--pred", str(tmp_path / "pred.extxyz"), "--ref", str(tmp_path / "ref.extxyz"),
                 "--input", str(tmp_path / "in.extxyz"), "-o", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    model_rows = [r for r in rows if r["method"] == "model"]
    assert len(model_rows) == 4 and all(float(r["coord_mae"]) < 1e-9 for r in model_rows)
    assert all(float(r["coord_mae"]) > 0 for r in rows if r["method"] == "dummy")
    write(tmp_path / "short.extxyz", relaxed[:2])  # two predictions have no reference: error rows, not the end
    assert main(["evaluate", "--pred", str(tmp_path / "pred.extxyz"), "--ref", str(tmp_path / "short.extxyz"),
                 "-o", str(tmp_path / "m2.csv")]) == 1
    assert "2 structures could not be scored" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "m2.csv")))
    assert sum("no reference structure has this id" in r["error"] for r in rows) == 2
    assert sum(r["coord_mae"] != "" for r in rows) == 2


def test_evaluate_plots_and_confidence_from_predict(tmp_path, capsys):
    """predict writes the confidence into each output frame; evaluate reads it, writes every column and
    one valid PNG per group whose error panel uses it."""
    from matplotlib.image import imread

    examples = Path(__file__).parent.parent.parent / "examples"
    assert main(["predict", "-i", str(examples), "-o", str(tmp_path / "pred.extxyz"), "--no-progress"]) == 0
    assert all("last_layer_max_move" in a.info for a in read(tmp_path / "pred.extxyz", ":"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred.extxyz"), "--ref", str(DATA / "examples_relaxed.extxyz"),
                 "--input", str(examples), "-o", str(tmp_path / "m.csv"), "--plot", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "p90" in printed and "unmatched" in printed
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 40
    for column in ("rmsd", "symmetry_1e-2", "symmetry_1e-5", "volume_per_atom_ref", "last_layer_max_move"):
        assert column in rows[0]
    assert all(r["last_layer_max_move"] == "" for r in rows if r["method"] == "dummy")
    pngs = sorted((tmp_path / "plots").iterdir())
    assert [p.name for p in pngs] == ["files.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(pngs[0])
    assert image.shape[0] > 500 and image.shape[1] > 500 and image.std() > 0.05  # drawn, not blank


def test_evaluate_refuses_duplicate_ids_and_names_mismatched_atoms(tmp_path, capsys):
    relaxed = read(DATA / "pairs_relaxed.extxyz", ":3")
    write(tmp_path / "ref.extxyz", relaxed)
    write(tmp_path / "dup.extxyz", [relaxed[0], relaxed[0]])
    assert main(["evaluate", "--pred", str(tmp_path / "dup.extxyz"), "--ref", str(tmp_path / "ref.extxyz"),
                 "-o", str(tmp_path / "m.csv")]) == 2
    assert "appears twice" in capsys.readouterr().err
    other = relaxed[0].copy()
    other.numbers = [int(other.numbers[0])] * len(other)  # other atoms than the reference holds
    assert len(set(relaxed[0].numbers)) > 1
    write(tmp_path / "other.extxyz", [other])
    assert main(["evaluate", "--pred", str(tmp_path / "other.extxyz"), "--ref", str(tmp_path / "ref.extxyz"),
                 "-o", str(tmp_path / "m.csv")]) == 1
    (row,) = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert repr(str(relaxed[0].info["id"])) in row["error"] and "'numbers'" in row["error"]


def test_evaluate_takes_a_shipped_models_name_like_predict(shipped_pair_store, tmp_path):
    assert main(["evaluate", "-m", "e3relax-small", "--store", str(shipped_pair_store), "--split", "val", "--per-source", "2",
                 "--no-symmetry", "-o", str(tmp_path / "m.csv"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 4 and all(r["coord_mae"] for r in rows)
