"""The expected-error model: features from the layer outputs, the fit, the metadata round trip, and
that the relaxer and the predict report carry ``expected_error`` when the checkpoint has one."""

import math

import numpy as np
import pytest
import torch
from ase.io import read

from e3relax_fast import E3Relaxer
from e3relax_fast.confidence import FEATURES, ErrorModel, fit_error_model, structure_features
from e3relax_fast.model.checkpoint import save_checkpoint

from .conftest import DATA


def test_features_measure_the_moves_of_the_layers():
    input_pos = torch.zeros(3, 3, dtype=torch.float64)
    input_cell = torch.eye(3, dtype=torch.float64).unsqueeze(0) * 4.0
    pos_layers = torch.stack([input_pos + torch.tensor([0.3, 0.0, 0.0]), input_pos + torch.tensor([0.4, 0.0, 0.0])])
    pos_layers[1, 2, 1] = 0.2  # atom 2 also moved by 0.2 Å along y in the last layer
    cell_layers = torch.stack([input_cell, input_cell * 1.1])
    f = structure_features(pos_layers, cell_layers, torch.tensor([0, 3]), 0, input_pos, input_cell)
    assert f["last_move_max"] == pytest.approx(math.hypot(0.1, 0.2))
    assert f["last_move_mean"] == pytest.approx((0.1 + 0.1 + math.hypot(0.1, 0.2)) / 3)
    assert f["total_move_max"] == pytest.approx(math.hypot(0.4, 0.2))
    assert f["volume_change"] == pytest.approx(1.1 ** 3 - 1)
    assert f["last_cell_change"] == pytest.approx(0.4)
    assert f["num_atoms"] == 3 and set(f) == set(FEATURES)


def test_the_fit_recovers_a_log_linear_error(rng):
    rows = [{name: float(v) for name, v in zip(FEATURES, rng.uniform(0.01, 1.0, len(FEATURES)))} for _ in range(400)]
    errors = np.array([0.05 * (r["total_move_mean"] + 1e-4) ** 0.8 for r in rows]) * np.exp(rng.normal(0, 0.05, 400))
    fitted = fit_error_model(rows, errors - 1e-4)
    assert fitted.weights[FEATURES.index("total_move_mean")] == pytest.approx(0.8, abs=0.05)
    predicted = np.array([fitted.expected_error(r) for r in rows])
    assert np.corrcoef(np.log(predicted), np.log(errors))[0, 1] > 0.95
    with pytest.raises(ValueError, match="need more than"):
        fit_error_model(rows[:3], errors[:3])


def test_metadata_round_trip_and_stale_entries_are_ignored():
    model = ErrorModel(tuple(0.1 * i for i in range(len(FEATURES))), -2.0, 0.3, "test")
    assert ErrorModel.from_metadata({"confidence": model.to_dict()}) == model
    assert ErrorModel.from_metadata({}) is None
    stale = {**model.to_dict(), "features": ["last_move_max"]}
    assert ErrorModel.from_metadata({"confidence": stale}) is None  # fitted on other features: not used


@pytest.fixture
def calibrated_checkpoint(make_model, tmp_path):
    model = make_model(layers=2)
    error_model = ErrorModel(tuple([1.0] + [0.0] * (len(FEATURES) - 1)), 0.0, 0.0, "test")
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model.state_dict(), {"model_config": model.config.to_dict(),
                                               "confidence": error_model.to_dict()})
    return path


def test_the_relaxer_reports_the_expected_error(calibrated_checkpoint):
    relaxer = E3Relaxer.from_pretrained(calibrated_checkpoint, dtype=torch.float64, max_volume_factor=float("inf"))
    atoms = read(DATA / "examples_relaxed.extxyz", index=0)
    result = relaxer.relax(atoms)
    moved = np.linalg.norm(result.trajectory[-1].positions - atoms.positions, axis=1).mean()
    # weights (1, 0, ...), bias 0: expected error = total move mean + FLOOR
    assert result.confidence["expected_error"] == pytest.approx(moved + 1e-4, rel=1e-9)


def test_the_predict_report_has_an_expected_error_column(calibrated_checkpoint, tmp_path):
    import pandas as pd

    from e3relax_fast.cli import main

    report = tmp_path / "report.csv"
    assert main(["predict", "-i", str(DATA / "examples_relaxed.extxyz"), "-m", str(calibrated_checkpoint), "-o",
                 str(tmp_path / "out.extxyz"), "--report", str(report), "--max-volume-factor", "inf",
                 "--no-progress"]) == 0
    table = pd.read_csv(report)
    assert (table["expected_error_A"] > 0).all() and len(table) == 20
    assert "expected_error" in read(tmp_path / "out.extxyz", index=0).info


def test_the_summary_reports_the_rank_correlation_of_expected_error():
    import pandas as pd

    from e3relax_fast.metrics import summarize

    errors = [0.05, 0.2, 0.1, 0.4, 0.3]
    frame = pd.DataFrame({"id": list("abcde") * 2, "method": ["model"] * 5 + ["dummy"] * 5, "group": "g",
                          "coord_mae": errors + [0.5] * 5,
                          "expected_error": [0.01, 0.1, 0.2, 0.5, 0.4] + [None] * 5})
    summary = summarize(frame).set_index(["method", "metric"])
    assert summary.loc[("model", "expected_error spearman"), "mean"] == pytest.approx(0.9)  # one swap in five
    assert ("dummy", "expected_error spearman") not in summary.index
