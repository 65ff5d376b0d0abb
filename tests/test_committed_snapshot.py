"""snapshots/release4.ckpt, the committed state of the release-4 run (docs/training.md, "Carrying a run
to another machine"): it loads without unpickling, and a fresh machine's `scripts/train_release4.sh`
can continue it with configs/train/release4.yaml as it stands (a config edited past it would be refused
there, hours after CI)."""

from pathlib import Path

import torch

from e3relax_fast.model import E3Relax
from e3relax_fast.model.checkpoint import model_config_of
from e3relax_fast.train import TrainConfig
from e3relax_fast.train.snapshot import read_run_snapshot
from e3relax_fast.train.trainer import _config_differences

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "snapshots" / "release4.ckpt"


def test_the_committed_snapshot_continues_the_release_4_recipe():
    weights, metadata = read_run_snapshot(SNAPSHOT)
    recipe = TrainConfig.from_yaml(ROOT / "configs" / "train" / "release4.yaml")
    assert model_config_of(metadata).to_dict() == recipe.model.to_dict()
    assert [d for d in _config_differences(metadata["train_config"], recipe.to_dict()) if not d.startswith("data.")] == []
    model = E3Relax(recipe.model)
    model.load_state_dict(weights)  # every weight there, of the right shape
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    saved = metadata["run_snapshot"]
    assert saved["state"]["step"] > 0 and saved["wall_s"] > 0
    assert saved["state"]["cycle"][1] == recipe.run.max_steps
    assert [r["step"] for r in saved["curve"] if "val_score" in r] == sorted(
        r["step"] for r in saved["curve"] if "val_score" in r) != []
