"""Run snapshots (e3relax_fast/train/snapshot.py, scripts/snapshot_run.py): a run carried to a fresh
machine goes on from its weights, step, schedule, hours and curve, with its rate re-warmed for the
fresh optimiser; what is not a snapshot, or not the same run, is refused; a continued run resumes
exactly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e3relax_fast.model.checkpoint import read_checkpoint
from e3relax_fast.train import Trainer, train
from e3relax_fast.train.schedule import BudgetSchedule
from e3relax_fast.train.snapshot import read_run_snapshot, rewarm_factor, write_run_snapshot

from .test_schedule import _interrupt_after, budgeted

ROOT = Path(__file__).resolve().parents[2]
PLAN = BudgetSchedule("cosine", 1e-3, 2, 1e-5, 0, 12)  # budgeted(max_steps=12)'s schedule


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def snapshot(pair_store, tmp_path, monkeypatch):
    """A 12-step budgeted run killed after 6 steps (one validation, at step 4), snapshotted."""
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 6)
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, tmp_path / "old", max_steps=12))
    out = tmp_path / "kept" / "run.ckpt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "snapshot_run.py"), str(tmp_path / "old"), "-o", str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    return out


def test_the_rewarm_ramps_the_rate_after_the_snapshot_step():
    assert rewarm_factor(None, 5) == 1.0 and rewarm_factor([10, 0], 10) == 1.0
    assert [rewarm_factor([10, 4], s) for s in (10, 11, 12, 13, 14, 100)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_a_snapshot_holds_the_ema_weights_counters_and_curve_only(snapshot, tmp_path):
    payload = torch.load(snapshot, weights_only=True)
    assert "training" not in payload  # no optimiser moments: a tenth of last.ckpt's size
    assert all(v.dtype == torch.float16 for v in payload["model"].values() if v.is_floating_point())
    last, _ = read_checkpoint(tmp_path / "old" / "last.ckpt")
    weights, metadata = read_run_snapshot(snapshot)
    for name, value in last["model"].items():  # the EMA, to float16 rounding
        torch.testing.assert_close(weights[name], value.to(torch.float16).float(), rtol=0, atol=0)
    saved = metadata["run_snapshot"]
    assert saved["state"] == {key: last["training"]["state"][key] for key in ("step", "epoch", "pass", "cycle")}
    assert saved["state"]["step"] == 6 and saved["wall_s"] == last["training"]["wall_s"] > 0
    assert [record["step"] for record in saved["curve"]] == [4]  # the validation, not the loss lines
    assert snapshot.stat().st_size < 0.5 * (tmp_path / "old" / "last.ckpt").stat().st_size


def test_a_fresh_run_folder_goes_on_from_a_snapshot(snapshot, pair_store, tmp_path):
    weights, metadata = read_run_snapshot(snapshot)
    trainer = Trainer(budgeted(pair_store, tmp_path / "new", max_steps=12), continue_from=snapshot)
    for name, value in weights.items():  # float16 -> the run's float64: exact
        torch.testing.assert_close(trainer.model.state_dict()[name], value.double(), rtol=0, atol=0)
        torch.testing.assert_close(trainer.ema.module.state_dict()[name], value.double(), rtol=0, atol=0)
    saved = metadata["run_snapshot"]
    assert trainer.state["step"] == 6 and trainer.state["cycle"] == [0, 12] and trainer.state["rewarm"] == [6, 2]
    assert trainer.state["pass"] == saved["state"]["pass"] + 1 and trainer.state["batch_in_pass"] == 0
    assert trainer.ema.updates == saved["ema_updates"] and trainer.wall_seconds() == saved["wall_s"]
    assert trainer.train()["step"] == 12
    trainer.close()
    log = _log(tmp_path / "new")
    assert [r["step"] for r in log if "val_score" in r] == [4, 8, 12]  # the old curve goes on
    event = [r for r in log if r.get("event") == "continued from snapshot"]
    assert len(event) == 1 and event[0]["step"] == 6 and event[0]["hours"] == pytest.approx(saved["wall_s"] / 3600)
    rates = [r["lr"] for r in log if "loss" in r]
    assert rates[0] == pytest.approx(0.5 * PLAN.lr_at(6))  # re-warmed: half the rate, then the plan's
    assert rates[1:] == pytest.approx([PLAN.lr_at(s) for s in range(7, 12)])
    hours = [r["hours"] for r in log if "loss" in r]
    assert hours[0] > saved["wall_s"] / 3600 and hours == sorted(hours)


def test_a_continued_run_resumes_exactly(snapshot, pair_store, tmp_path, monkeypatch):
    train(budgeted(pair_store, tmp_path / "straight", max_steps=12), continue_from=snapshot)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 7)  # inside the re-warm
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, tmp_path / "split", max_steps=12), continue_from=snapshot)
    assert train(budgeted(pair_store, tmp_path / "split", max_steps=12), resume=True)["step"] == 12
    straight, _ = read_checkpoint(tmp_path / "straight" / "last.ckpt")
    resumed, _ = read_checkpoint(tmp_path / "split" / "last.ckpt")
    for name, value in straight["training"]["model"].items():
        torch.testing.assert_close(resumed["training"]["model"][name], value, rtol=0, atol=0)
    assert resumed["training"]["state"] == straight["training"]["state"]


def test_what_is_not_a_snapshot_of_the_same_run_is_refused(snapshot, pair_store, tmp_path):
    config = budgeted(pair_store, tmp_path / "new", max_steps=12)
    with pytest.raises(ValueError, match="'run_snapshot'"):
        Trainer(config, continue_from=tmp_path / "old" / "best.ckpt")
    with pytest.raises(ValueError, match="optim.lr"):
        Trainer(config.replace(optim={"lr": 2e-3}), continue_from=snapshot)
    with pytest.raises(ValueError, match="holds a model with config"):
        Trainer(config.replace(model={"hidden_channels": 8}), continue_from=snapshot)
    with pytest.raises(ValueError, match="pass one of them"):
        Trainer(config, resume=True, continue_from=snapshot)
    with pytest.raises(ValueError, match="holds a run already"):  # the old folder: --resume, never overwrite
        Trainer(budgeted(pair_store, tmp_path / "old", max_steps=12), continue_from=snapshot)
    # each refusal released the folder: a good start still takes it
    Trainer(config, continue_from=snapshot).close()


def test_a_killed_snapshot_write_leaves_the_earlier_snapshot_intact(snapshot, tmp_path, monkeypatch):
    before = snapshot.read_bytes()

    def killed(payload, path):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        write_run_snapshot(tmp_path / "old", snapshot)
    assert snapshot.read_bytes() == before


def test_e3relax_curve_reads_a_snapshot_and_never_writes_over_it(snapshot, tmp_path, capsys):
    from e3relax_fast.cli import main

    assert main(["curve", str(snapshot), "--markdown", "-o", str(tmp_path / "curve.png"), "--x", "step"]) == 0
    out = capsys.readouterr().out
    assert "| 4 |" in out and (tmp_path / "curve.png").stat().st_size > 0  # the run's one validation
    assert main(["curve", str(tmp_path / "old"), "--markdown"]) == 0  # the run folder gives the same table
    assert capsys.readouterr().out.splitlines()[:3] == out.splitlines()[:3]
    before = snapshot.read_bytes()
    assert main(["curve", str(snapshot), "-o", str(snapshot.with_suffix(".png"))]) == 0
    renamed = snapshot.with_name("run.png")
    snapshot.rename(renamed)  # a snapshot named like a figure is still refused as an output
    assert main(["curve", str(renamed), "-o", str(renamed)]) == 2
    assert "refusing to write over it" in capsys.readouterr().err and renamed.read_bytes() == before
    assert main(["curve", str(tmp_path / "old" / "best.ckpt"), "--markdown"]) == 2
    assert "'run_snapshot'" in capsys.readouterr().err
