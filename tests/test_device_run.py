"""A training run moved to a GPU machine and back (scripts/device_run.py, scripts/device_train.sh),
exercised on the CPU with a tiny budget: a compact store rebuilds the graphs the full store held, the
device script trains without ase or pymatgen importable, and its weights come back into the CPU run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from e3relax_fast.data.store import PairStore, write_compact_store
from e3relax_fast.model.checkpoint import read_checkpoint
from e3relax_fast.train import train

from .train.test_trainer import tiny_config

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ase", "pymatgen"):
            raise ImportError(f"{name} is not installed on the device image")
sys.meta_path.insert(0, _Blocked())
'''


def test_a_compact_store_builds_the_graphs_the_full_store_held(pair_store, tmp_path):
    full = PairStore(pair_store)
    meta = write_compact_store(full, tmp_path / "compact")
    compact = PairStore(tmp_path / "compact")
    assert not compact.has_graphs and full.has_graphs and "edges" not in meta["arrays"]
    assert compact.ids == full.ids and compact.kinds == full.kinds and list(compact.split) == list(full.split)
    size = lambda path: sum(p.stat().st_size for p in Path(path).iterdir())  # noqa: E731
    assert size(tmp_path / "compact") < 0.6 * size(pair_store)
    indices = np.arange(len(full))[:6]
    a, b = full.batch(indices), compact.batch(indices)
    edges = lambda batch: {(int(j), int(i), *map(int, s)) for (j, i), s in zip(batch.edge_index.T, batch.shifts)}  # noqa: E731
    assert edges(a) == edges(b)
    torch.testing.assert_close(a.pos, b.pos, atol=1e-5, rtol=0)  # float32 geometry
    assert b.pos.dtype == torch.float64


def test_the_device_script_trains_without_ase_and_its_weights_come_back(pair_store, tmp_path):
    config = tiny_config(pair_store, tmp_path / "cpu_run", run={"max_steps": 2})
    train(config)
    # the recipe may draw a source the packed store lacks yet (generated pairs): drawn with weight 0 there
    config.replace(data={"source_weights": {"mp_pairs3": 2.0}}).to_yaml(tmp_path / "tiny.yaml")
    script = [sys.executable, str(ROOT / "scripts" / "device_run.py")]
    subprocess.run([*script, "pack", "--run", str(tmp_path / "cpu_run"), "--out", str(tmp_path / "device")],
                   check=True, cwd=ROOT)
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "DEVICE": "cpu", "BUDGET_S": "20", "WORKERS": "0", "BATCH": "4", "LR": "1e-3",
           "CONFIG": str(tmp_path / "tiny.yaml"), "RUN": str(tmp_path / "device"), "OUT": str(tmp_path / "back"),
           "PYTHONPATH": str(tmp_path / "blocker"), "OMP_NUM_THREADS": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "budget reached" in (tmp_path / "back" / "train.log").read_text()
    parts = sorted((tmp_path / "back").glob("weights_part*.pt"))
    assert parts and all(p.stat().st_size < 16 * 2 ** 20 for p in parts)
    subprocess.run([*script, "unpack", str(tmp_path / "back"), "--into", str(tmp_path / "cpu_run" / "last.ckpt")],
                   check=True, cwd=ROOT)
    payload, metadata = read_checkpoint(tmp_path / "cpu_run" / "last.ckpt")
    gpu = {}
    for part in parts:
        gpu.update(torch.load(part, weights_only=True))
    for name, value in gpu.items():
        assert torch.equal(payload["model"][name].float(), value) and torch.equal(payload["training"]["model"][name].float(), value)
    assert metadata["device_runs"][0]["gpu_steps"] > 2
    assert train(tiny_config(pair_store, tmp_path / "cpu_run", run={"max_steps": 3}), resume=True)["step"] == 3
