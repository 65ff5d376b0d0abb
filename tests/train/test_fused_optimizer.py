"""``run.fused_optimizer`` (e3relax_fast/train/trainer.py): AdamW's update as one fused kernel makes the
same training as the per-tensor loop to rounding, resumes exactly, and a resume takes the run's
setting, not the one a checkpoint's optimiser state was saved with."""

import pytest
import torch

from e3relax_fast.model.checkpoint import read_checkpoint
from e3relax_fast.train import Trainer, train

from .test_schedule import _interrupt_after, budgeted


def _weights(run_dir):
    payload, _ = read_checkpoint(run_dir / "last.ckpt")
    return payload["training"]["model"]


def test_fused_and_loop_updates_train_alike(pair_store, tmp_path):
    untrained = Trainer(budgeted(pair_store, tmp_path / "untrained"))
    start = {n: v.clone() for n, v in untrained.model.state_dict().items()}
    untrained.close()
    train(budgeted(pair_store, tmp_path / "loop", fused_optimizer=False))
    train(budgeted(pair_store, tmp_path / "fused", fused_optimizer=True))
    loop, fused = _weights(tmp_path / "loop"), _weights(tmp_path / "fused")
    for name, value in loop.items():
        torch.testing.assert_close(fused[name], value, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(start[n], v) for n, v in loop.items())  # eight steps moved the weights


@pytest.mark.parametrize("saved_fused", [False, True])
def test_a_resume_takes_the_runs_implementation(pair_store, tmp_path, monkeypatch, saved_fused):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, run_dir, fused_optimizer=saved_fused))
    trainer = Trainer(budgeted(pair_store, run_dir, fused_optimizer=not saved_fused), resume=True)
    try:
        groups = trainer.optimizer.param_groups
        assert all(bool(g["fused"]) == (not saved_fused) and g["foreach"] is False for g in groups)
        steps = [s["step"] for s in trainer.optimizer.state.values()]
        assert steps and all(float(s) == 3.0 and s.dtype == torch.float32 for s in steps)
        assert trainer.train()["step"] == 8  # the other implementation goes on from the loaded moments
    finally:
        trainer.close()


def test_a_fused_run_resumes_exactly(pair_store, tmp_path, monkeypatch):
    train(budgeted(pair_store, tmp_path / "straight", fused_optimizer=True))
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, tmp_path / "split", fused_optimizer=True))
    train(budgeted(pair_store, tmp_path / "split", fused_optimizer=True), resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)
