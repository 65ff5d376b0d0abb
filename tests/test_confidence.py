"""The expected-error model: features from the layer outputs, the fit, the metadata round trip, and
that the relaxer and the predict report carry ``expected_error`` when the checkpoint has one."""

import math

import numpy as np
import pytest
import torch
from ase.io import read
from scipy.stats import spearmanr

from e3relax_fast import E3Relaxer
from e3relax_fast.confidence import (FEATURES, ErrorHead, ErrorModel, LastLayerCapture, fit_error_head, fit_error_model,
                                     last_layer_summary, structure_features)
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


# --------------------------------------------------------------------------------------------------
# The learned head (metadata "confidence_head")

def _signal_rows(rng, n):
    return [{name: float(v) for name, v in zip(FEATURES, rng.uniform(0.01, 1.0, len(FEATURES)))} for _ in range(n)]


def test_the_head_learns_an_error_the_signals_alone_cannot_see(rng):
    """The error depends on a last-layer summary channel, not on the hand-made signals: the head ranks
    it, the hand-made model cannot, and the head's mean expected error matches the mean actual one."""
    n, channels = 600, 4
    rows, summaries = _signal_rows(rng, n), rng.normal(size=(n, 3 * channels))
    errors = 0.05 * np.exp(0.8 * summaries[:, 1]) * np.exp(rng.normal(0, 0.1, n))
    head = fit_error_head(rows[:400], summaries[:400], errors[:400], alpha=1e-3)
    assert head.channels == channels
    expected = head.expected_errors(rows[400:], summaries[400:])
    assert spearmanr(expected, errors[400:]).statistic > 0.9
    assert 0.9 < expected.mean() / errors[400:].mean() < 1.1
    hand_made = fit_error_model(rows[:400], errors[:400])
    assert abs(spearmanr([hand_made.expected_error(r) for r in rows[400:]], errors[400:]).statistic) < 0.3
    with pytest.raises(ValueError, match="at least 10"):
        fit_error_head(rows[:5], summaries[:5], errors[:5])


def test_a_head_of_another_width_or_feature_set_is_not_used(rng):
    rows, summaries = _signal_rows(rng, 50), rng.normal(size=(50, 3 * 16))
    head = fit_error_head(rows, summaries, rng.uniform(0.01, 0.1, 50))
    metadata = {"confidence_head": head.to_dict(), "model_config": {"hidden_channels": 16}}
    assert ErrorHead.from_metadata(metadata) == head
    assert ErrorHead.from_metadata({**metadata, "model_config": {"hidden_channels": 32}}) is None
    stale = {**head.to_dict(), "summaries": ["atom_scalars_mean"]}
    assert ErrorHead.from_metadata({**metadata, "confidence_head": stale}) is None


def test_the_summary_reads_the_last_layer_and_the_hook_goes_away(make_model):
    model = make_model(layers=2)
    atoms = read(DATA / "examples_relaxed.extxyz", index=":2")
    from e3relax_fast.data import batch_from_structures

    batch = batch_from_structures(atoms, dtype=torch.float64)
    with torch.no_grad(), LastLayerCapture(model) as last_layer:
        model(*batch.tensors())
    summary = last_layer_summary(last_layer.state, batch.ptr)
    channels = model.config.hidden_channels
    assert summary.shape == (2, 3 * channels)
    h = last_layer.state.h[: int(batch.ptr[1])]
    np.testing.assert_allclose(summary[0, :channels], h.mean(0).numpy(), rtol=1e-12)
    assert not model.layers[-1]._forward_hooks  # removed on leaving the block
    np.testing.assert_array_equal(last_layer.summaries(batch.ptr), summary)
    with torch.no_grad(), LastLayerCapture(model, wanted=False) as unwanted:  # no head: no hook at all
        assert not model.layers[-1]._forward_hooks
        model(*batch.tensors())
    assert unwanted.state is None and unwanted.summaries(batch.ptr) is None


@pytest.fixture
def checkpoint_with_a_head(make_model, tmp_path, rng):
    """A head whose weights are all zero: expected error exp(bias + variance / 2) = 0.123 Å exactly."""
    model = make_model(layers=2)
    channels = model.config.hidden_channels
    width = len(FEATURES) + 3 * channels
    head = ErrorHead((0.0,) * width, (1.0,) * width, (0.0,) * width, math.log(0.123), 0.0, channels, "test")
    hand_made = ErrorModel(tuple([1.0] + [0.0] * (len(FEATURES) - 1)), 0.0, 0.0, "test")
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model.state_dict(), {"model_config": model.config.to_dict(),
                                               "confidence": hand_made.to_dict(), "confidence_head": head.to_dict()})
    return path


def test_the_relaxer_and_evaluate_take_the_head_over_the_hand_made_model(checkpoint_with_a_head, pair_store,
                                                                           tmp_path):
    import pandas as pd

    from e3relax_fast.cli import main

    relaxer = E3Relaxer.from_pretrained(checkpoint_with_a_head, dtype=torch.float64, max_volume_factor=float("inf"))
    assert isinstance(relaxer.error_model, ErrorHead)
    result = relaxer.relax(read(DATA / "examples_relaxed.extxyz", index=0))
    assert result.confidence["expected_error"] == pytest.approx(0.123, rel=1e-12)
    scores = tmp_path / "scores.csv"
    assert main(["evaluate", "-m", str(checkpoint_with_a_head), "--store", str(pair_store), "--no-symmetry",
                 "--no-progress", "-o", str(scores)]) == 0
    model_rows = pd.read_csv(scores).query("method == 'model'")
    assert len(model_rows) > 0 and np.allclose(model_rows["expected_error"], 0.123, rtol=1e-5)
