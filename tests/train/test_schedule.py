"""The budgeted learning-rate schedule: its shape, exact resumption, the warm restart, its refusals."""

import json
import math

import pytest
import torch

from e3relax_fast.model.checkpoint import read_checkpoint
from e3relax_fast.train import TrainConfig, Trainer, train
from e3relax_fast.train.schedule import BudgetSchedule, next_cycle

from .test_trainer import tiny_config


def budgeted(store, run_dir, **run) -> TrainConfig:
    """The tiny run under a cosine schedule over 8 steps."""
    return tiny_config(store, run_dir, optim={"lr": 1e-3, "schedule": "cosine", "warmup_steps": 2, "final_lr": 1e-5},
                       run={"max_steps": 8, **run})


def test_warm_up_then_cosine_to_the_final_rate():
    schedule = BudgetSchedule("cosine", 1e-3, 4, 1e-5, start=0, end=104)
    assert [schedule.lr_at(s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert schedule.lr_at(54) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way through the decay
    assert schedule.lr_at(104) == pytest.approx(1e-5) and schedule.lr_at(10 ** 6) == pytest.approx(1e-5)
    linear = BudgetSchedule("linear", 1e-3, 0, 0.0, start=100, end=200)
    assert linear.lr_at(150) == pytest.approx(5e-4) and linear.lr_at(100) == pytest.approx(1e-3)
    rates = [schedule.lr_at(s) for s in range(4, 105)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_a_cycle_is_kept_extended_after_its_end_and_replanned_mid_way():
    assert next_cycle((0, 100), 40, 100, 4) == (0, 100)
    assert next_cycle((0, 100), 100, 250, 4) == (100, 250)  # warm restart from step 100
    assert next_cycle((0, 100), 40, 30, 4) == (0, 100)  # a budget already reached: the run just stops
    assert next_cycle((0, 100), 2, 60, 4) == (0, 60)  # in the warm-up: only the end moves
    for kind in ("cosine", "linear"):
        for new_end in (60, 41, 250, 10 ** 6):  # shorter, one step left, longer, much longer
            old = BudgetSchedule(kind, 1e-3, 4, 1e-5, 0, 100)
            start, end = next_cycle((0, 100), 40, new_end, 4)
            new = BudgetSchedule(kind, 1e-3, 4, 1e-5, start, end)
            assert end == new_end
            assert new.lr_at(40) == pytest.approx(old.lr_at(40), rel=1e-9)  # no jump
            assert new.lr_at(new_end) == pytest.approx(1e-5)
            rates = [new.lr_at(s) for s in range(40, new_end + 1, max(1, (new_end - 40) // 50))]
            assert all(a >= b for a, b in zip(rates, rates[1:]))


def _interrupt_after(monkeypatch, steps: int) -> None:
    """Make the trainer stop as a kill (KeyboardInterrupt) would, right after ``steps`` steps."""
    original = Trainer._after_step

    def after_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.state["step"] == steps:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_after_step", after_step)


def test_an_interrupted_budgeted_run_resumes_exactly(pair_store, tmp_path, monkeypatch):
    train(budgeted(pair_store, tmp_path / "straight"))
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, tmp_path / "split"))
    assert train(budgeted(pair_store, tmp_path / "split"), resume=True)["step"] == 8
    straight, _ = read_checkpoint(tmp_path / "straight" / "last.ckpt")
    resumed, _ = read_checkpoint(tmp_path / "split" / "last.ckpt")
    for name, value in straight["training"]["model"].items():
        torch.testing.assert_close(resumed["training"]["model"][name], value, rtol=0, atol=0)
    assert resumed["training"]["state"] == straight["training"]["state"]
    rates = [r["lr"] for r in map(json.loads, (tmp_path / "split" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    expected = [BudgetSchedule("cosine", 1e-3, 2, 1e-5, 0, 8).lr_at(s) for s in range(8)]
    assert rates == pytest.approx(expected)  # logged after each step: that step's rate


def test_a_finished_budget_is_extended_by_a_warm_restart(pair_store, tmp_path):
    train(budgeted(pair_store, tmp_path / "run"))
    trainer = Trainer(budgeted(pair_store, tmp_path / "run", max_steps=12), resume=True)
    assert trainer.state["cycle"] == [8, 12]
    trainer._set_learning_rate(trainer.budget_schedule())
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 2)  # warming up again
    assert trainer.train()["step"] == 12
    payload, _ = read_checkpoint(tmp_path / "run" / "last.ckpt")
    assert payload["training"]["state"]["cycle"] == [8, 12]
    rates = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert rates[8:] == pytest.approx([BudgetSchedule("cosine", 1e-3, 2, 1e-5, 8, 12).lr_at(s) for s in range(8, 12)])


def test_budgeted_schedules_need_a_budget(pair_store, tmp_path):
    with pytest.raises(ValueError, match="run.max_steps"):
        tiny_config(pair_store, tmp_path, optim={"schedule": "cosine", "warmup_steps": 10}, run={"max_steps": 0})
    with pytest.raises(ValueError, match="optim.schedule"):
        tiny_config(pair_store, tmp_path, optim={"schedule": "step"})
    config = TrainConfig.from_dict({"optim": {"schedule": "linear"}, "run": {"max_steps": 5}})
    assert config.optim.schedule == "linear" and not math.isnan(config.optim.final_lr)


def test_a_budget_changed_mid_run_goes_on_from_the_current_rate(pair_store, tmp_path, monkeypatch):
    """8 steps planned, interrupted after 3, resumed with a budget of 6: the rate at step 3 is the one
    the 8-step run would have used, and it reaches the final rate at step 6."""
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train(budgeted(pair_store, tmp_path / "run", max_steps=8))
    assert train(budgeted(pair_store, tmp_path / "run", max_steps=6), resume=True)["step"] == 6
    rates = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    planned = BudgetSchedule("cosine", 1e-3, 2, 1e-5, 0, 8)
    assert rates[:3] == pytest.approx([planned.lr_at(s) for s in range(3)])
    assert rates[3] == pytest.approx(planned.lr_at(3), rel=1e-9)
    assert rates[5] < rates[4] < rates[3] and rates[5] == pytest.approx(BudgetSchedule(
        "cosine", 1e-3, 2, 1e-5, *read_checkpoint(tmp_path / "run" / "last.ckpt")[0]["training"]["state"]["cycle"]).lr_at(5))
