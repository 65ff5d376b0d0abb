"""The trainer: the paper's loss, EMA, learning on real pairs, exact resumption, safe checkpoints, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from e3relax_fast.data.store import write_store
from e3relax_fast.model.checkpoint import load_model, read_checkpoint
from e3relax_fast.train import ExponentialMovingAverage, TrainConfig, Trainer, layerwise_loss, train


def tiny_config(store, run_dir, **sections) -> TrainConfig:
    config = TrainConfig().replace(
        model={"hidden_channels": 16, "num_layers": 2, "num_rbf": 16},
        data={"store": str(store), "max_structures_per_batch": 4},
        optim={"lr": 1e-3},
        run={"dir": str(run_dir), "steps_per_epoch": 4, "max_steps": 8, "progress": False, "log_every": 1,
             "checkpoint_every": 2, "dtype": "float64"},
    )
    return config.replace(**sections) if sections else config


def test_layerwise_loss_is_mean_euclidean_plus_mean_abs_cell():
    target_pos = torch.zeros(3, 3, dtype=torch.float64)
    target_cell = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    pos_layers = torch.stack([torch.tensor([[3.0, 4.0, 0.0], [0, 0, 0], [0, 0, 1]], dtype=torch.float64),
                              torch.zeros(3, 3, dtype=torch.float64)])
    cell_layers = torch.stack([target_cell + 0.5, target_cell.clone()])
    loss, parts = layerwise_loss(pos_layers, cell_layers, target_pos, target_cell, atom_norm=3.0, cell_norm=18.0)
    np.testing.assert_allclose(parts.numpy(), [[(5.0 + 0 + 1) / 3, 0.5], [0.0, 0.0]])
    assert float(loss) == pytest.approx(2.0 + 0.5)


def test_ema_warms_up_then_uses_its_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ExponentialMovingAverage(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first decay min(0.999, 1/10): 0.1 of the old value kept
    assert float(ema.module.weight) == pytest.approx(0.9)
    ema.updates = 10 ** 6
    ema.update(model)  # decay 0.999 from then on
    assert float(ema.module.weight) == pytest.approx(0.9 + 0.001 * 0.1)


def test_loss_decreases_on_real_pairs(pair_store, tmp_path):
    config = tiny_config(pair_store, tmp_path / "run", run={"max_steps": 40, "steps_per_epoch": 20, "log_every": 1},
                         data={"max_structures_per_batch": 17, "val_split": "train"}, optim={"lr": 3e-3})
    train(config)
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])  # an untrained step would leave it flat


@pytest.mark.slow
def test_overfits_eight_pairs(pair_records, tmp_path):
    records = list(pair_records())
    chosen = [records[i] for i in (0, 4, 8, 12, 14, 15, 16, 17)]  # 4 prototypes, 4 perovskites
    for record in chosen:
        record.split = "train"
    write_store(chosen, tmp_path / "store", progress=False)
    config = TrainConfig().replace(
        model={"hidden_channels": 32, "num_layers": 2, "num_rbf": 16},
        data={"store": str(tmp_path / "store"), "val_split": "train", "max_structures_per_batch": 8},
        optim={"lr": 3e-3, "ema_decay": 0.0},
        run={"dir": str(tmp_path / "run"), "max_steps": 300, "steps_per_epoch": 100, "progress": False})
    trainer = Trainer(config)
    before = trainer.validate(trainer.model)
    trainer.train()
    after = trainer.validate(trainer.model)
    assert after["val_coord_mae"] < 0.2 * before["val_coord_mae"]
    assert after["val_cell_mae"] < 0.2 * before["val_cell_mae"]


def _training_state(run_dir: Path):
    payload, metadata = read_checkpoint(run_dir / "last.ckpt")
    return payload, metadata


def test_resume_equals_uninterrupted_training(pair_store, tmp_path):
    # 8 steps = two pseudo-epochs (validation, scheduler, best.ckpt) and a second pass over the data
    train(tiny_config(pair_store, tmp_path / "straight"))
    train(tiny_config(pair_store, tmp_path / "split", run={"max_steps": 3}))
    interrupted_wall_s = _training_state(tmp_path / "split")[0]["training"]["wall_s"]
    summary = train(tiny_config(pair_store, tmp_path / "split"), resume=True)
    assert summary["step"] == 8
    straight, _ = _training_state(tmp_path / "straight")
    resumed, _ = _training_state(tmp_path / "split")
    for name, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0)  # EMA weights
    for name, value in straight["training"]["model"].items():
        torch.testing.assert_close(resumed["training"]["model"][name], value, rtol=0, atol=0)
    assert resumed["training"]["state"] == straight["training"]["state"]
    assert resumed["training"]["scheduler"] == straight["training"]["scheduler"]
    log = lambda d: (tmp_path / d / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in ("structures_per_s", "hours")}  # noqa: E731
                           for x in lines]
    assert strip(log("split")) == strip(log("straight"))
    # the wall-clock hours go on from the interrupted run's, in the log and in last.ckpt
    hours = [json.loads(x)["hours"] for x in log("split")]
    assert interrupted_wall_s > 0 and all(h > 0 for h in hours) and hours == sorted(hours)
    assert hours[3] >= interrupted_wall_s / 3600.0  # step 4, the first after the resume
    assert resumed["training"]["wall_s"] >= 3600.0 * hours[-1] > interrupted_wall_s


def test_checkpoints_load_with_weights_only_and_carry_metadata(pair_store, tmp_path):
    config = tiny_config(pair_store, tmp_path / "run")
    train(config)
    for name in ("best.ckpt", "last.ckpt"):
        payload = torch.load(tmp_path / "run" / name, weights_only=True)
        metadata = json.loads(payload["metadata"])
        for key in ("model_config", "graph", "elements", "data", "train_config", "versions", "step"):
            assert key in metadata, key
    model, metadata = load_model(tmp_path / "run" / "best.ckpt")
    assert metadata["model_config"] == config.model.to_dict()
    assert metadata["graph"] == {"cutoff": 6.0, "max_neighbors": 50, "self_images": "paper"}
    assert metadata["elements"] and all(1 <= z <= 118 for z in metadata["elements"])
    assert metadata["data"]["split_counts"]["val"] > 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert TrainConfig.from_dict(saved) == config
    assert "torch" in json.loads((tmp_path / "run" / "versions.json").read_text())


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    torch.save({"format": "e3relax-checkpoint", "metadata": "{}", "model": {}, "evil": object()}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="not a loadable e3relax checkpoint"):
        read_checkpoint(tmp_path / "x.ckpt")


def test_config_mistakes_are_errors(pair_store, tmp_path):
    with pytest.raises(ValueError, match="optim.lrr"):
        TrainConfig.from_dict({"optim": {"lrr": 1.0}})
    (tmp_path / "c.yaml").write_text(tiny_config(pair_store, tmp_path / "run").to_yaml())
    overridden = TrainConfig.from_yaml(tmp_path / "c.yaml", ["optim.lr=3e-4", "run.seed=7"])
    assert overridden.optim.lr == 3e-4 and overridden.run.seed == 7
    with pytest.raises(ValueError, match="graph"):
        Trainer(tiny_config(pair_store, tmp_path / "run", model={"max_neighbors": 12}))
    train(tiny_config(pair_store, tmp_path / "run", run={"max_steps": 1}))
    with pytest.raises(ValueError, match="--resume"):
        Trainer(tiny_config(pair_store, tmp_path / "run"))
    with pytest.raises(ValueError, match="optim.lr"):
        Trainer(tiny_config(pair_store, tmp_path / "run", optim={"lr": 0.5}), resume=True)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(pair_store, tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the weights of one process with the same global batch."""
    single = tiny_config(pair_store, tmp_path / "single", run={"max_steps": 4})
    train(single)
    config_path = tmp_path / "ddp.yaml"
    single.replace(run={"dir": str(tmp_path / "ddp")}).to_yaml(config_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "e3relax_fast.cli", "train", "--config", str(config_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, _ = _training_state(tmp_path / "single")
    two, metadata = _training_state(tmp_path / "ddp")
    assert metadata["step"] == 4
    for name, value in one["training"]["model"].items():
        torch.testing.assert_close(two["training"]["model"][name], value, rtol=1e-9, atol=1e-11)
    assert not (tmp_path / "ddp" / "metrics.jsonl").read_text().count("\n") > \
        (tmp_path / "single" / "metrics.jsonl").read_text().count("\n")  # rank 0 logs alone


def test_init_from_reads_older_checkpoints_with_their_defaults(pair_store, tmp_path):
    """A checkpoint written before position_update and strain_head existed holds neither key: it starts
    a run of the same architecture, and a run of another architecture is refused."""
    config = tiny_config(pair_store, tmp_path / "first")
    train(config)
    payload, metadata = read_checkpoint(tmp_path / "first" / "best.ckpt")
    old_keys = {k: v for k, v in metadata["model_config"].items() if k not in ("position_update", "strain_head")}
    from e3relax_fast.model.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "old.ckpt", payload["model"], {**metadata, "model_config": old_keys})
    resumed = tiny_config(pair_store, tmp_path / "second", run={"init_from": str(tmp_path / "old.ckpt"),
                                                                "max_steps": 1})
    train(resumed)
    assert (tmp_path / "second" / "best.ckpt").exists()
    affine = tiny_config(pair_store, tmp_path / "third", run={"init_from": str(tmp_path / "old.ckpt")},
                         model={"hidden_channels": 16, "num_layers": 2, "num_rbf": 16, "position_update": "affine"})
    with pytest.raises(ValueError, match="holds a model with config"):
        train(affine)


def test_init_from_a_model_trained_with_another_neighbour_cap(pair_store, pair_records, tmp_path):
    """The cap shapes no weight: release 3 (50 neighbours) may start a run on a sparser graph."""
    from e3relax_fast.data.store import GraphSettings

    train(tiny_config(pair_store, tmp_path / "first", run={"max_steps": 1}))
    sparse = tmp_path / "sparse"
    write_store(pair_records(), sparse, GraphSettings(6.0, 24, "paper"), split_fractions={"val": 0.25}, seed=10,
                progress=False)
    config = tiny_config(sparse, tmp_path / "second", model={"hidden_channels": 16, "num_layers": 2, "num_rbf": 16,
                                                             "max_neighbors": 24},
                         run={"init_from": str(tmp_path / "first" / "best.ckpt"), "max_steps": 1})
    assert train(config)["step"] == 1


def test_a_cpu_budget_stops_the_run_and_says_so(pair_store, tmp_path):
    summary = train(tiny_config(pair_store, tmp_path / "run", run={"max_steps": 10 ** 6, "max_cpu_minutes": 0.02,
                                                                   "steps_per_epoch": 10 ** 6}))
    assert summary["stopped"] == "max_cpu_minutes (0.02) reached"
    assert 1 <= summary["step"] < 10 ** 6 and (tmp_path / "run" / "last.ckpt").exists()


def test_bfloat16_training_products_keep_the_weights_and_follow_float32(pair_store, tmp_path):
    """run.matmul_dtype=bfloat16: the same parameters (names, float32 master copies), a loss within
    bfloat16's rounding of float32's, and an EMA model that stays plain float32."""
    from e3relax_fast.nn.layers import MixedPrecisionLinear

    base = tiny_config(pair_store, tmp_path / "a", run={"dtype": "float32", "max_steps": 1})
    plain = Trainer(base)
    mixed = Trainer(base.replace(run={"dir": str(tmp_path / "b"), "matmul_dtype": "bfloat16"}))
    assert [n for n, _ in plain.model.named_parameters()] == [n for n, _ in mixed.model.named_parameters()]
    assert any(isinstance(m, MixedPrecisionLinear) for m in mixed.model.modules())
    assert not any(isinstance(m, MixedPrecisionLinear) for m in mixed.ema.module.modules())
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    batch = plain.data.store.batch(plain.data.order.batches(0)[0])
    parts = [t.train_step(batch, int(batch.ptr[-1]), batch.num_structures) for t in (plain, mixed)]
    torch.testing.assert_close(parts[1], parts[0], rtol=0.05, atol=1e-3)
    assert not torch.equal(parts[1], parts[0])  # the products did run in bfloat16
    with pytest.raises(ValueError, match="run.matmul_dtype"):
        tiny_config(pair_store, tmp_path, run={"matmul_dtype": "float16"})


def test_run_compile_wraps_the_training_model_and_may_be_switched_on_when_resuming(pair_store, tmp_path,
                                                                                     monkeypatch):
    """run.compile hands the training model to torch.compile (dynamic shapes) and nothing else: the
    checkpoints and the EMA keep reading the plain module. torch.compile itself is replaced by a
    recording pass-through here (compiling takes minutes); its numbers matched the eager step to 1e-15
    on this model by hand (session 10 note)."""
    calls = []

    def recording_compile(module, dynamic=None):
        calls.append((module, dynamic))
        return module

    monkeypatch.setattr(torch, "compile", recording_compile)
    train(tiny_config(pair_store, tmp_path / "run", run={"max_steps": 2}))
    assert calls == []
    resumed = Trainer(tiny_config(pair_store, tmp_path / "run", run={"max_steps": 4, "compile": True}), resume=True)
    assert calls == [(resumed.model, True)] and resumed.state["step"] == 2
    assert resumed.train()["step"] == 4


def test_training_on_the_cpu_keeps_freed_memory_for_reuse_unless_told_not_to(pair_store, tmp_path, monkeypatch):
    import e3relax_fast.train.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "tune_cpu_allocator", lambda: calls.append(1) or True)
    Trainer(tiny_config(pair_store, tmp_path / "tuned", run={"max_steps": 2})).close()
    assert calls == [1]
    train(tiny_config(pair_store, tmp_path / "plain", run={"max_steps": 2, "tune_allocator": False}))
    assert calls == [1]
    # it changes no number: a run may be resumed with it switched
    assert train(tiny_config(pair_store, tmp_path / "plain", run={"max_steps": 4}), resume=True)["step"] == 4
    assert calls == [1, 1]
