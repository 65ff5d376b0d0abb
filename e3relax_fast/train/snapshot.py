"""Run snapshots: a small file that carries a training run to another machine, and the re-warm that
starts it there.

A run folder under ``runs/`` lives only as long as its machine; a machine that is replaced takes the
run's hours with it (the first release-4 run lost about 9.7 hours that way). A *snapshot* keeps what is worth
keeping of ``<run.dir>/last.ckpt`` in a file small enough to commit: the EMA weights (float16, as a
release stores them: 10.8 MB for the ``small`` model, against ~110 MB for the whole training state
with its three optimiser moments), the run's counters (step, pass, the schedule's cycle, EMA updates,
hours) and its validation curve (the ``metrics.jsonl`` lines with a ``val_score``, and its events).

``e3relax train --continue-from SNAPSHOT`` starts an empty run folder from one (``Trainer``): the EMA
weights become both the weights and the EMA, the counters and the curve go on, the data from a fresh
pass (the saved position indexed the old machine's store, which may differ), and the optimiser starts
afresh. A fresh Adam moves every weight by about the full rate in its first steps (its moments are
the first gradients' own), so the rate is re-warmed: scaled by ``(k + 1) / warmup`` over the first
``optim.warmup_steps`` steps after the snapshot's step (:func:`rewarm_factor`), on top of the
schedule, which goes on where it was. docs/training.md, "Carrying a run to another machine".
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.checkpoint import read_checkpoint, save_checkpoint
from .curve import run_log_curve

#: what of the trainer's counters a snapshot carries: the position within a pass is not (a fresh pass
#: follows), nor the best score (a new machine's run folder holds no best.ckpt to beat)
SNAPSHOT_COUNTERS = ("step", "epoch", "pass", "cycle")


def rewarm_factor(rewarm: list | tuple | None, step: int) -> float:
    """The factor on the rate of the optimiser step after ``step`` completed steps, for a run continued
    from a snapshot at step ``start`` with a fresh optimiser: ``rewarm = [start, steps]`` ramps it
    linearly from ``1 / steps`` to 1 over ``steps`` steps; 1 without one (``None`` or ``steps`` 0)."""
    if not rewarm or int(rewarm[1]) <= 0:
        return 1.0
    start, steps = int(rewarm[0]), int(rewarm[1])
    return min(1.0, (max(0, step - start) + 1) / steps)


def write_run_snapshot(run_dir: str | Path, out: str | Path) -> dict:
    """Write the snapshot of ``run_dir``'s ``last.ckpt`` to ``out`` (atomically: a kill mid-write leaves
    any earlier snapshot there intact). Returns the snapshot's ``run_snapshot`` metadata."""
    run_dir = Path(run_dir)
    payload, metadata = read_checkpoint(run_dir / "last.ckpt")
    if "training" not in payload:
        raise ValueError(f"{run_dir / 'last.ckpt'} holds no training state: not a run's last.ckpt")
    training = payload["training"]
    state = training["state"]
    snapshot = {"from": str(run_dir), "state": {key: state[key] for key in SNAPSHOT_COUNTERS if key in state},
                "ema_updates": int(training["ema_updates"]), "wall_s": float(training.get("wall_s", 0.0)),
                "best_val": float(state.get("best_val", float("inf"))), "curve": run_log_curve(run_dir)}
    weights = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in payload["model"].items()}
    metadata = {**metadata, "run_snapshot": snapshot, "weights_storage_dtype": "float16"}
    metadata.pop("format_version", None)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, weights, metadata)
    return snapshot


def read_run_snapshot(path: str | Path) -> tuple[dict, dict]:
    """``(float32 weights, metadata)`` of a snapshot; a checkpoint that is not one is a ``ValueError``
    naming the file and the missing field."""
    payload, metadata = read_checkpoint(path)
    snapshot = metadata.get("run_snapshot")
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("state"), dict) or "step" not in snapshot["state"]:
        raise ValueError(f"{path}: field 'run_snapshot' (with its 'state' and step) is missing: not a run snapshot "
                         "(write one with scripts/snapshot_run.py)")
    weights = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    return weights, metadata
