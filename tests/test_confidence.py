"""The expected-error model: features from the layer outputs, the fit, the metadata round trip, and
that the relaxer and the predict report carry ``expected_error`` when the checkpoint has one."""

import math

import numpy as np
import pytest
import torch
from ase.io import read
from scipy.stats import spearmanr

from e3relax_fast import E3Relaxer
from e3relax_fast.confidence import (FEATURES, RERUN_CAP, RERUN_FEATURES, ErrorHead, ErrorModel, LastLayerCapture,
                                     RerunErrorModel, fit_error_head, fit_error_model, fit_rerun_model,
                                     last_layer_summary, rerun_features, structure_features)
from e3relax_fast.model.checkpoint import save_checkpoint

from .conftest import DATA, load_script


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


# --------------------------------------------------------------------------------------------------
# The rerun model (metadata "confidence_rerun")

def _structures_batch(count=3):
    from e3relax_fast.data import batch_from_structures

    return batch_from_structures(read(DATA / "examples_relaxed.extxyz", index=f":{count}"), dtype=torch.float64)


def _moves(pos_a, cell_a, pos_b, cell_b):
    """Each atom's move against its lattice, written out: (x_b L_b^-1 - x_a L_a^-1) L_b."""
    return (pos_b @ torch.inverse(cell_b) - pos_a @ torch.inverse(cell_a)) @ cell_b


def _strain(cell_a, cell_b):
    return (torch.inverse(cell_a) @ cell_b - torch.eye(3, dtype=cell_a.dtype)).abs()


def _rerun_oracle(model, pos, z, cell, pbc):
    """The rerun signals of one structure alone, each model run on it alone, written out plainly."""
    ptr = torch.tensor([0, len(z)])
    pos_layers, cell_layers = model(pos, z, cell, pbc, ptr)
    pos1, cell1 = pos_layers[-1], cell_layers[-1][0]
    pos2_layers, cell2_layers = model(pos1, z, cell1[None], pbc, ptr)
    pos2, cell2 = pos2_layers[-1], cell2_layers[-1][0]
    pos3_layers, cell3_layers = model(pos2, z, cell2[None], pbc, ptr)
    pos3, cell3 = pos3_layers[-1], cell3_layers[-1][0]
    before_pos, before_cell = pos_layers[-2], cell_layers[-2][0]
    move, last = _moves(pos, cell[0], pos1, cell1), _moves(before_pos, before_cell, pos1, cell1)
    rerun = _moves(pos1, cell1, pos2, cell2)
    return {"move_mean": float(move.abs().mean()), "move_max": float(move.norm(dim=1).max()),
            "strain_max": float(_strain(cell[0], cell1).max()),
            "last_layer_move_mean": float(last.abs().mean()), "last_layer_move_max": float(last.norm(dim=1).max()),
            "last_layer_strain_max": float(_strain(before_cell, cell1).max()),
            "rerun_move_mean": float(rerun.abs().mean()), "rerun_move_max": float(rerun.norm(dim=1).max()),
            "rerun_strain_max": float(_strain(cell1, cell2).max()),
            "rerun_strain_mean": float(_strain(cell1, cell2).mean()),
            "rerun_volume_change": float(abs(torch.det(cell2) / torch.det(cell1) - 1)),
            "rerun_first_layer_move_mean": float(_moves(pos1, cell1, pos2_layers[0], cell2_layers[0][0]).abs().mean()),
            "second_rerun_move_mean": float(_moves(pos2, cell2, pos3, cell3).abs().mean()),
            "reruns_move_mean": float(_moves(pos1, cell1, pos3, cell3).abs().mean())}


@pytest.fixture(scope="module")
def shipped_model():
    """The shipped model in float64: its predictions stay near the inputs, so no rerun falls back."""
    from e3relax_fast.model.checkpoint import load_model
    from e3relax_fast.model.pretrained import resolve_model_path

    return load_model(resolve_model_path(None))[0].double().eval()


@torch.no_grad()
def test_rerun_features_of_a_batch_match_each_structure_rerun_alone(shipped_model):
    model = shipped_model
    batch = _structures_batch(3)
    pos_layers, cell_layers = model(*batch.tensors())
    rows = rerun_features(model, pos_layers, cell_layers, batch.z, batch.pbc, batch.ptr, batch.pos, batch.cell)
    assert len(rows) == 3 and all(list(row) == list(RERUN_FEATURES) for row in rows)
    for b in range(3):
        a0, a1 = int(batch.ptr[b]), int(batch.ptr[b + 1])
        alone = _rerun_oracle(model, batch.pos[a0:a1], batch.z[a0:a1], batch.cell[b:b + 1], batch.pbc[b:b + 1])
        for name in RERUN_FEATURES:
            assert rows[b][name] == pytest.approx(alone[name], rel=1e-9, abs=1e-12), (b, name)
    assert rows[0]["rerun_move_mean"] > 0  # an untrained model moves its own prediction


@torch.no_grad()
def test_a_broken_prediction_is_rerun_from_the_input_and_its_batch_mates_are_untouched(shipped_model):
    """A prediction that is not finite, or whose cell collapsed, has no bounded graph: it is rerun from
    the input (it is refused anyway), and the other structures' signals stay what they were."""
    model = shipped_model
    batch = _structures_batch(3)
    pos_layers, cell_layers = model(*batch.tensors())
    args = (batch.z, batch.pbc, batch.ptr, batch.pos, batch.cell)
    clean = rerun_features(model, pos_layers, cell_layers, *args)
    a0, a1 = int(batch.ptr[1]), int(batch.ptr[2])
    broken_pos, collapsed_cell = pos_layers.clone(), cell_layers.clone()
    broken_pos[-1, a0] = float("nan")
    collapsed_cell[-1, 1] *= 0.1  # volume 1/1000 of the input's
    for pos, cell in ((broken_pos, cell_layers), (pos_layers, collapsed_cell)):
        rows = rerun_features(model, pos, cell, *args)
        assert all(math.isfinite(v) for v in rows[1].values())
        assert rows[0] == pytest.approx(clean[0], rel=1e-12) and rows[2] == pytest.approx(clean[2], rel=1e-12)
    not_finite = pos_layers.clone()
    not_finite[-1, a0:a1] = float("nan")
    from_input = rerun_features(model, not_finite, cell_layers, *args)[1]
    pos_from_input, cell_from_input = pos_layers.clone(), cell_layers.clone()
    pos_from_input[-1, a0:a1], cell_from_input[-1, 1] = batch.pos[a0:a1], batch.cell[1]  # the input as prediction
    expected = rerun_features(model, pos_from_input, cell_from_input, *args)[1]
    reruns = [name for name in RERUN_FEATURES if "rerun" in name]
    assert {n: from_input[n] for n in reruns} == pytest.approx({n: expected[n] for n in reruns}, rel=1e-9)
    # its own signals are capped, so a broken prediction never looks settled
    assert from_input["move_mean"] == from_input["last_layer_move_max"] == RERUN_CAP


def _rerun_rows(rng, n):
    return [{name: float(v) for name, v in zip(RERUN_FEATURES, rng.uniform(0.001, 0.5, len(RERUN_FEATURES)))}
            for _ in range(n)]


def test_the_rerun_model_learns_an_error_from_the_rerun_signals(rng):
    n = 600
    reruns = _rerun_rows(rng, n)
    errors = np.array([2.0 * r["rerun_move_mean"] for r in reruns]) * np.exp(rng.normal(0, 0.1, n))
    fitted = fit_rerun_model(reruns[:400], errors[:400], alpha=1e-3)
    expected = fitted.expected_errors(reruns[400:])
    assert spearmanr(expected, errors[400:]).statistic > 0.9
    assert 0.9 < expected.mean() / errors[400:].mean() < 1.1
    assert RerunErrorModel.from_metadata({"confidence_rerun": fitted.to_dict()}) == fitted
    stale = {**fitted.to_dict(), "rerun_features": ["rerun_move_mean"]}
    assert RerunErrorModel.from_metadata({"confidence_rerun": stale}) is None
    with pytest.raises(ValueError, match="at least 10"):
        fit_rerun_model(reruns[:5], errors[:5])


@torch.no_grad()
def test_the_rerun_signals_do_not_grow_with_the_size_of_the_cell(shipped_model):
    """The same crystal as a 1x1x1 and a 3x3x3 cell, its atoms rattled alike: the moves measured in
    Cartesian terms would grow with the cell (a strain moves far atoms far), the rerun signals do not."""
    from e3relax_fast.data import batch_from_structures

    atoms = read(DATA / "examples_relaxed.extxyz", index=0)
    rows = []
    for repeat in (1, 3):
        big = atoms.repeat(repeat)
        big.positions += 0.03 * np.sin(np.arange(3 * len(big)).reshape(-1, 3))  # deterministic, not periodic
        batch = batch_from_structures([big], dtype=torch.float64)
        pos_layers, cell_layers = shipped_model(*batch.tensors())
        rows.append(rerun_features(shipped_model, pos_layers, cell_layers, batch.z, batch.pbc, batch.ptr, batch.pos,
                                   batch.cell)[0])
        if repeat == 3:
            cartesian = float((pos_layers[-1] - batch.pos).abs().mean())
    for name in ("move_mean", "rerun_move_mean", "rerun_strain_max", "second_rerun_move_mean"):
        assert rows[1][name] < 3 * rows[0][name] + 1e-3, name
    assert cartesian > 2 * rows[1]["move_mean"]  # the Cartesian moves did grow


@pytest.fixture(scope="module")
def checkpoint_with_a_rerun_model(tmp_path_factory):
    """The shipped checkpoint plus a rerun model whose weights are all zero but the one on
    ``rerun_move_mean`` (1): expected error = rerun_move_mean + FLOOR exactly."""
    from e3relax_fast.model.checkpoint import read_checkpoint
    from e3relax_fast.model.pretrained import resolve_model_path

    payload, metadata = read_checkpoint(resolve_model_path(None))
    metadata.pop("format_version", None)
    width = len(RERUN_FEATURES)
    weights = [0.0] * width
    weights[RERUN_FEATURES.index("rerun_move_mean")] = 1.0
    rerun = RerunErrorModel((0.0,) * width, (1.0,) * width, tuple(weights), 0.0, 0.0, "test")
    path = tmp_path_factory.mktemp("rerun") / "rerun.ckpt"
    save_checkpoint(path, payload["model"], {**metadata, "confidence_rerun": rerun.to_dict()})
    return path


@torch.no_grad()
def test_the_relaxer_reruns_only_when_asked_and_keeps_its_prediction(checkpoint_with_a_rerun_model,
                                                                     checkpoint_with_a_head):
    atoms = read(DATA / "examples_relaxed.extxyz", index=0)
    options = dict(dtype=torch.float64)
    single = E3Relaxer.from_pretrained(checkpoint_with_a_rerun_model, **options).relax(atoms)
    shipped = E3Relaxer.from_pretrained(None, **options).relax(atoms)
    assert single.confidence["expected_error"] == shipped.confidence["expected_error"]  # the head, as before
    relaxer = E3Relaxer.from_pretrained(checkpoint_with_a_rerun_model, confidence="rerun", **options)
    assert isinstance(relaxer.error_model, RerunErrorModel)
    result = relaxer.relax(atoms)
    assert result.ok
    np.testing.assert_array_equal(result.final_structure.positions, single.final_structure.positions)
    prepared = relaxer.prepare("0", atoms)  # the model sees the reduced basis; so does the oracle
    pos, z, cell, pbc = (torch.as_tensor(a) for a in prepared.arrays)
    alone = _rerun_oracle(relaxer.model, pos, z, cell.unsqueeze(0), pbc.unsqueeze(0))
    assert result.confidence["expected_error"] == pytest.approx(alone["rerun_move_mean"] + 1e-4, rel=1e-9)
    with pytest.raises(ValueError, match="confidence_rerun"):
        E3Relaxer.from_pretrained(checkpoint_with_a_head, confidence="rerun", **options)
    with pytest.raises(ValueError, match="confidence must be one of"):
        E3Relaxer.from_pretrained(checkpoint_with_a_head, confidence="twice", **options)


def test_predict_and_evaluate_take_the_rerun_model_when_asked(checkpoint_with_a_rerun_model, shipped_pair_store,
                                                             tmp_path):
    import pandas as pd

    from e3relax_fast.cli import main

    reports = {}
    for mode in ("single-pass", "rerun"):
        reports[mode] = tmp_path / f"{mode}.csv"
        assert main(["predict", "-i", str(DATA / "examples_relaxed.extxyz"), "-m", str(checkpoint_with_a_rerun_model),
                     "-o", str(tmp_path / f"{mode}.extxyz"), "--report", str(reports[mode]), "--max-volume-factor",
                     "inf", "--no-progress", "--confidence", mode]) == 0
    single, rerun = pd.read_csv(reports["single-pass"]), pd.read_csv(reports["rerun"])
    assert (single["expected_error_A"] > 0).all() and (rerun["expected_error_A"] > 1e-4).all()
    assert not np.allclose(single["expected_error_A"], rerun["expected_error_A"], rtol=1e-2)
    # the same predictions, whichever confidence
    np.testing.assert_allclose(np.vstack([a.positions for a in read(tmp_path / "single-pass.extxyz", ":")]),
                               np.vstack([a.positions for a in read(tmp_path / "rerun.extxyz", ":")]), atol=1e-5)
    scores = tmp_path / "scores.csv"
    assert main(["evaluate", "-m", str(checkpoint_with_a_rerun_model), "--store", str(shipped_pair_store), "--no-symmetry",
                 "--no-progress", "--confidence", "rerun", "-o", str(scores)]) == 0
    model_rows = pd.read_csv(scores).query("method == 'model'")
    assert len(model_rows) > 0 and (model_rows["expected_error"] > 1e-4).all()
    assert model_rows["expected_error"].nunique() == len(model_rows)  # one per structure, from its own reruns


def test_the_calibration_script_fits_and_stores_a_rerun_model(tmp_path):
    """scripts/calibrate_confidence.py --rerun: fitted on half of the groups, reported on the other,
    stored in the checkpoint's metadata beside what it held; the tensors stay as they were."""
    import shutil
    import subprocess
    import sys

    from e3relax_fast.model.checkpoint import read_checkpoint
    from e3relax_fast.model.pretrained import resolve_model_path

    from e3relax_fast.cli import main

    store = tmp_path / "store"  # 42 pairs: enough for ten in each half of the groups
    assert main(["preprocess", "--pairs", str(DATA / "pairs_unrelaxed.extxyz"), str(DATA / "pairs_relaxed.extxyz"),
                 "--pairs", str(DATA / "perov5_sample.csv"), "--structures", str(DATA / "examples_relaxed.extxyz"),
                 "-o", str(store), "--no-progress"]) == 0
    path = tmp_path / "model.ckpt"
    shutil.copy(resolve_model_path(None), path)
    done = subprocess.run([sys.executable, str(DATA.parent.parent / "scripts" / "calibrate_confidence.py"), str(path),
                           "--store", str(store), "--rerun", "--split", "all"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rerun Spearman" in done.stdout and "stored head Spearman" in done.stdout
    payload, metadata = read_checkpoint(path)
    before, original = read_checkpoint(resolve_model_path(None))
    assert RerunErrorModel.from_metadata(metadata) is not None
    assert metadata["confidence_head"] == original["confidence_head"]
    assert all(torch.equal(payload["model"][k], before["model"][k]) for k in before["model"])


def test_out_of_fold_expected_errors_never_see_their_own_pair(rng):
    """scripts/calibrate_confidence.py judges each fold of the groups by a head fitted on the others:
    changing one fold's errors leaves that fold's expected errors exactly as they were and moves the rest."""
    script = load_script("calibrate_confidence")
    n, channels, folds = 120, 2, 4
    rows = [("src", f"group-{k // 2}", signals, summary, float(error), None) for k, (signals, summary, error) in
            enumerate(zip(_signal_rows(rng, n), rng.normal(size=(n, 3 * channels)), rng.uniform(0.01, 0.5, n)))]
    fold = np.array([script.group_fold(r[1], folds) for r in rows])
    assert set(fold) == set(range(folds)) and all(len(set(fold[k:k + 2])) == 1 for k in range(0, n, 2))
    before = script.out_of_fold_expected(rows, 0.1, False, folds)
    changed = [r[:4] + (r[4] * 50 if fold[k] == 0 else r[4],) + r[5:] for k, r in enumerate(rows)]
    after = script.out_of_fold_expected(changed, 0.1, False, folds)
    assert np.array_equal(before[fold == 0], after[fold == 0])
    assert (after[fold != 0] > 2 * before[fold != 0]).all()  # the other folds were fitted on fold 0
