"""The model shipped in the package: safe to load, fully described, and better than doing nothing."""

import json
import os

import numpy as np
import pytest
import torch
from ase.io import read

from e3relax_fast.confidence import ErrorHead, ErrorModel
from e3relax_fast.metrics import structure_metrics
from e3relax_fast.model.checkpoint import CHECKPOINT_FORMAT
from e3relax_fast.model.pretrained import DEFAULT_MODEL, PRETRAINED_DIR, pretrained_names, resolve_model_path
from e3relax_fast.relax import E3Relaxer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples")
REFERENCES = os.path.join(ROOT, "tests", "data", "examples_relaxed.extxyz")


def test_the_default_model_ships_small_and_loads_without_unpickling():
    path = resolve_model_path(None)
    assert path == PRETRAINED_DIR / f"{DEFAULT_MODEL}.ckpt" and DEFAULT_MODEL in pretrained_names()
    assert path.stat().st_size < 25e6
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert all(isinstance(v, torch.Tensor) for v in payload["model"].values())


def test_the_shipped_metadata_is_complete():
    metadata = json.loads(torch.load(resolve_model_path(None), weights_only=True)["metadata"])
    for key in ("model_config", "graph", "elements", "data", "train_config", "step", "versions", "release"):
        assert key in metadata, key
    release = metadata["release"]
    assert {"labels", "licences", "splits", "split_rule", "validation"} <= set(release)
    methods = {(row["group"], row["method"]) for row in release["validation"]}
    for source in ("chgnet_pairs", "perov5", "mp:perturbed", "mp_pairs"):  # every training source, both methods
        assert {(source, "model"), (source, "dummy")} <= methods, source
    assert len(metadata["elements"]) >= 87  # every element of the Materials Project set
    assert any("structures:" in source for source in metadata["data"]["sources"])
    assert ErrorModel.from_metadata(metadata) is not None  # expected_error is reported
    assert ErrorHead.from_metadata(metadata) is not None  # by the learned head, for eager models
    assert (PRETRAINED_DIR / "MODEL_CARD.md").is_file()


def test_an_unknown_model_name_says_what_ships():
    with pytest.raises(FileNotFoundError, match=DEFAULT_MODEL):
        resolve_model_path("no-such-model")


def test_the_shipped_model_beats_the_dummy_baseline_on_the_examples():
    # The examples are one pair of each validation prototype: structure types never seen in training.
    references = {a.info["id"]: a for a in read(REFERENCES, ":")}
    inputs = {os.path.splitext(f)[0]: read(os.path.join(EXAMPLES, f))
              for f in sorted(os.listdir(EXAMPLES)) if f.endswith(".cif")}
    assert set(inputs) == set(references) and len(inputs) == 20
    relaxer = E3Relaxer.from_pretrained()
    results = list(relaxer.relax_many(list(inputs.items())))
    assert all(r.ok for r in results)
    model = [structure_metrics(r.final_structure, references[r.id], symmetry=False) for r in results]
    dummy = [structure_metrics(inputs[r.id], references[r.id], symmetry=False) for r in results]
    for metric in ("coord_mae", "volume_error", "metric_tensor_error"):
        model_error, dummy_error = np.mean([m[metric] for m in model]), np.mean([d[metric] for d in dummy])
        assert model_error < dummy_error, (metric, model_error, dummy_error)
    # the prototype set's volume target of issue 8 holds on the examples too
    assert np.mean([m["volume_error"] for m in model]) < 0.5 * np.mean([d["volume_error"] for d in dummy])


def test_bfloat16_products_move_the_shipped_predictions_by_little():
    """matmul_precision="bfloat16" rounds the channel-mixing products' inputs to 8 significant bits:
    the predictions of the examples move by well under the model's own error (~0.3 Å), and the model
    still beats the Dummy baseline on them."""
    inputs = [(os.path.splitext(f)[0], read(os.path.join(EXAMPLES, f)))
              for f in sorted(os.listdir(EXAMPLES)) if f.endswith(".cif")]
    exact = list(E3Relaxer.from_pretrained().relax_many(inputs))
    reduced = list(E3Relaxer.from_pretrained(matmul_precision="bfloat16").relax_many(inputs))
    moves = [np.abs(a.final_structure.positions - b.final_structure.positions).max() for a, b in zip(exact, reduced)]
    cells = [np.abs(a.final_structure.cell[:] - b.final_structure.cell[:]).max() for a, b in zip(exact, reduced)]
    assert 0 < max(moves) < 0.03 and max(cells) < 0.03, (max(moves), max(cells))
    references = {a.info["id"]: a for a in read(REFERENCES, ":")}
    model = np.mean([structure_metrics(r.final_structure, references[r.id], symmetry=False)["coord_mae"]
                     for r in reduced])
    dummy = np.mean([structure_metrics(dict(inputs)[r.id], references[r.id], symmetry=False)["coord_mae"]
                     for r in reduced])
    assert model < dummy


def test_the_shipped_relaxer_reports_the_heads_expected_error():
    from e3relax_fast import E3Relaxer

    relaxer = E3Relaxer.from_pretrained()
    assert isinstance(relaxer.error_model, ErrorHead)
    result = relaxer.relax(read(os.path.join(EXAMPLES, "train-101-00023.cif")))
    assert 0.0 < result.confidence["expected_error"] < 1.0  # Å: a coordinate MAE, not a bound
