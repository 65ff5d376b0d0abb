"""Layer-wise supervised training of E3Relax: resumable, single-process or DDP (``torchrun``).

The recipe is the paper's (docs/training.md, "The recipe"): the loss sums, over every layer, the mean per-atom
Euclidean position error and the mean absolute cell-entry error; AdamW with amsgrad, global-norm
clipping, an EMA of the weights that is validated and saved, ReduceLROnPlateau and early stopping on
the EMA model's validation coordinate MAE, once per pseudo-epoch of ``steps_per_epoch`` steps.

Run folder: ``config.yaml`` (resolved), ``versions.json``, ``metrics.jsonl`` (one JSON object per log
line or validation), ``last.ckpt`` (resumable: weights, EMA, optimiser, scheduler, counters, data
position), ``best.ckpt`` (EMA weights + metadata, what ``predict`` loads).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..allocator import tune_cpu_allocator
from ..data.batching import CrystalBatch
from ..model import E3Relax
from ..model.checkpoint import model_config_of, read_checkpoint, save_checkpoint
from ..model.config import config_from_dict
from ..ops import atom_structure_index
from .config import DataConfig, TrainConfig
from .data import TrainingData, scored_val_fingerprint
from .schedule import BudgetSchedule, next_cycle
from .snapshot import read_run_snapshot, rewarm_factor

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Config fields that may change between a run and its resumption (they change what is learnt by rounding at most).
_RESUMABLE_CHANGES = {("run", "max_steps"), ("run", "max_cpu_minutes"), ("run", "max_epochs"), ("run", "progress"), ("run", "checkpoint_every"),
                      ("run", "log_every"), ("run", "dir"), ("data", "num_workers"), ("run", "device"),
                      ("run", "backend"), ("run", "early_stopping_patience"),
                      ("run", "init_from"), ("run", "matmul_dtype"), ("run", "compile"),
                      ("run", "tune_allocator"),
                      ("run", "fused_optimizer")}  # init_from starts a run; a resumed one takes its weights from last.ckpt


def layerwise_loss(pos_layers: Tensor, cell_layers: Tensor, target_pos: Tensor, target_cell: Tensor,
                   atom_norm: float, cell_norm: float) -> tuple[Tensor, Tensor]:
    """Sum over layers of position and cell losses.

    Args:
        pos_layers [L,N,3], cell_layers [L,B,3,3]: predictions per layer (Å).
        target_pos [N,3] (unwrapped), target_cell [B,3,3]: relaxed structure (Å).
        atom_norm, cell_norm: the divisors of the sums (atoms and 9 x structures of the *global* batch,
            divided by the number of ranks, so that DDP's gradient average gives the global mean).

    Returns:
        ``(loss, parts)``: the scalar loss and ``parts [L, 2]`` = (position, cell) term per layer.
    """
    position = torch.linalg.vector_norm(pos_layers - target_pos, dim=-1).sum(dim=1) / atom_norm
    cell = (cell_layers - target_cell).abs().sum(dim=(1, 2, 3)) / cell_norm
    parts = torch.stack([position, cell], dim=1)
    return parts.sum(), parts


class ExponentialMovingAverage:
    """EMA of a module's parameters, updated after every optimiser step.

    The decay is ``min(decay, (1 + n) / (10 + n))`` after n updates (the usual warm-up, as in
    ``torch_ema``), so the average does not cling to the random initial weights for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for average, current in zip(self.module.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.module.buffers(), model.buffers()):
            average.copy_(current)
        self.updates += 1


def _versions() -> dict:
    from .._version import __version__

    versions = {"e3relax_fast": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for name in ("pymatgen", "ase"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            pass
    return versions


def _optimizer_implementation(fused: bool) -> dict:
    """AdamW's options for ``run.fused_optimizer``: one fused kernel, or the plain per-tensor loop."""
    return {"fused": True, "foreach": False} if fused else {"fused": None, "foreach": False}


def _use_optimizer_implementation(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """After ``load_state_dict``: the run's implementation, not the checkpoint's (a loaded state dict
    brings its groups' options, ``fused`` among them), with each step count where a fused update
    reads it (a float32 tensor on the parameter's device)."""
    for group in optimizer.param_groups:
        group.update(_optimizer_implementation(fused))
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if fused and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(dtype=torch.float32, device=parameter.device)


def _config_differences(old: dict, new: dict) -> list[str]:
    out = []
    for section in sorted(set(old) | set(new)):
        for key in sorted(set(old.get(section, {})) | set(new.get(section, {}))):
            if (section, key) in _RESUMABLE_CHANGES:
                continue
            if old.get(section, {}).get(key) != new.get(section, {}).get(key):
                out.append(f"{section}.{key}: {old.get(section, {}).get(key)!r} -> {new.get(section, {}).get(key)!r}")
    return out


def _store_contents(store_meta: dict) -> dict:
    """What identifies a store's pairs in a checkpoint's ``data`` metadata: its sources and split counts."""
    return {"sources": store_meta.get("sources", []), "split_counts": store_meta.get("split_counts", {})}


class Trainer:
    """Train E3Relax as ``config`` says; ``resume=True`` continues from ``<run.dir>/last.ckpt``, and with
    ``new_data=True`` on data settings (``data.*``) that differ from the run's (:meth:`_continue_on_new_data`);
    ``continue_from`` starts an empty run folder from a run snapshot (train/snapshot.py)."""

    def __init__(self, config: TrainConfig, resume: bool = False, new_data: bool = False,
                 continue_from: str | Path | None = None):
        self.config = config
        self.continue_from = continue_from
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world_size > 1
        self.device = torch.device(config.run.device)
        self.dtype = _DTYPES[config.run.dtype]
        if config.run.tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()  # before the first batch: its per-edge tensors are reused, not faulted in
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cpu":  # share the cores instead of oversubscribing them
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        self.is_main = self.rank == 0
        self.run_dir = Path(config.run.dir)

        self.data = TrainingData(config.data, config.model, config.run.seed, self.world_size, self.rank)
        torch.manual_seed(config.run.seed)
        self.model = self._build_model()
        self.ema = ExponentialMovingAverage(self.model, config.optim.ema_decay)  # validated in run.dtype
        if config.run.matmul_dtype == "bfloat16":
            self.model.train_matmuls_in_bfloat16()
        self.ddp_model: nn.Module = (nn.parallel.DistributedDataParallel(self.model) if self.distributed
                                     else self.model)
        if config.run.compile:  # the same weights: checkpoints and the EMA read self.model
            self.ddp_model = torch.compile(self.ddp_model, dynamic=True)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.optim.lr,
                                           weight_decay=config.optim.weight_decay, amsgrad=config.optim.amsgrad,
                                           **_optimizer_implementation(config.run.fused_optimizer))
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.optim.plateau_factor,
            patience=config.optim.plateau_patience, min_lr=config.optim.min_lr)
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "pass": 0, "batch_in_pass": 0,
                                      "best_val": math.inf, "epochs_since_best": 0, "stopped": ""}
        if config.optim.schedule != "plateau":  # the budgeted schedule's cycle [start, end) (train/schedule.py)
            self.state["cycle"] = [0, config.run.max_steps]
        self.clip_grad_norm = config.optim.clip_grad_norm
        self.elements = self.data.store.elements(self.data.train_indices)
        self._wall_before, self._wall_start = 0.0, None  # wall_seconds(): saved time, and this train()'s start
        self._start_or_resume(resume, new_data)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.run_dir / "config.yaml")
            (self.run_dir / "versions.json").write_text(json.dumps(_versions(), indent=1))

    def _start_or_resume(self, resume: bool, new_data: bool) -> None:
        """Take the run folder (rank 0: :meth:`_lock_run_dir`), then resume it or check it holds no run
        (and, with ``continue_from``, start it from that snapshot)."""
        if new_data and not resume:
            raise ValueError("--new-data continues a run on changed data settings: it needs --resume")
        if resume and self.continue_from:
            raise ValueError("--continue-from starts an empty run folder from a snapshot and --resume continues "
                             "the run in it: pass one of them")
        self._run_lock = self._lock_run_dir() if self.is_main else None
        try:
            if resume:
                self._resume(new_data)
            elif self.is_main and (self.run_dir / "last.ckpt").exists():
                raise ValueError(f"run folder {str(self.run_dir)!r} holds a run already: pass --resume to continue "
                                 "it or choose another run.dir")
            if self.continue_from:
                self._continue_from_snapshot(Path(self.continue_from))
        except BaseException:
            self.close()
            raise

    def _lock_run_dir(self):
        """An exclusive ``flock`` on ``<run.dir>/run.lock`` for as long as this trainer lives (the system
        drops it when the process dies, so a killed run leaves no stale lock): a second job training the
        same folder would overwrite the first one's checkpoints and log. Returns the open lock file."""
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / "run.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RuntimeError(f"run folder {str(self.run_dir)!r} is being trained by another process ({holder}): "
                               "one run per folder; wait for it, stop it, or choose another run.dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        return handle

    def budget_schedule(self) -> BudgetSchedule | None:
        """The learning rate of the current cycle as a function of the step (train/schedule.py); None
        under ``optim.schedule=plateau``, where the scheduler sets the rate at each validation."""
        optim = self.config.optim
        if optim.schedule == "plateau":
            return None
        start, end = self.state["cycle"]
        return BudgetSchedule(optim.schedule, optim.lr, optim.warmup_steps, optim.final_lr, start, end)

    def _set_learning_rate(self, schedule: BudgetSchedule | None) -> None:
        """Budgeted schedules: the rate of the coming step, from the step alone (train/schedule.py);
        None (plateau): the scheduler sets it at each validation."""
        if schedule is not None:  # re-warmed after a continuation from a snapshot (train/snapshot.py)
            step = self.state["step"]
            for group in self.optimizer.param_groups:
                group["lr"] = schedule.lr_at(step) * rewarm_factor(self.state.get("rewarm"), step)

    def _build_model(self) -> E3Relax:
        """The configured model on the run's device, from ``run.init_from``'s weights where set."""
        config = self.config
        model = E3Relax(config.model, config.run.backend, self.device).to(device=self.device, dtype=self.dtype)
        self.init_metadata: dict = {}
        if config.run.init_from and not self.continue_from:  # a snapshot brings weights of its own
            payload, self.init_metadata = read_checkpoint(config.run.init_from)
            self._check_model_config(self.init_metadata, f"run.init_from {config.run.init_from!r}")
            model.load_state_dict(payload["model"])
        return model

    def _check_model_config(self, metadata: dict, what: str) -> None:
        """Refuse weights of another model than the configured one; the graph's neighbour cap shapes no
        weight, so a model may go on on a sparser graph."""
        found = model_config_of(metadata).to_dict()  # older checkpoints: their defaults
        wanted = self.config.model.to_dict()
        if {key for key in found if found[key] != wanted[key]} - {"max_neighbors"}:
            raise ValueError(f"{what} holds a model with config {found}, not the configured {wanted}")

    # ----------------------------------------------------------------------------------------------
    def metadata(self, metrics: dict | None = None) -> dict:
        store_meta = self.data.store.meta
        return {
            "model_config": self.config.model.to_dict(),
            "graph": self.data.store.graph.to_dict(),
            "elements": self.elements,
            "data": {"store": str(self.config.data.store), **_store_contents(store_meta),
                     "split_seed": store_meta.get("split_seed"),
                     "train_split": self.config.data.train_split, "val_split": self.config.data.val_split,
                     "init_from": self.config.run.init_from},
            "train_config": self.config.to_dict(),
            "step": self.state["step"],
            "epoch": self.state["epoch"],
            "metrics": metrics or {},
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _save(self, name: str, metrics: dict | None = None) -> None:
        """``<run.dir>/<name>``: the EMA weights and metadata (rank 0 only); ``last.ckpt`` also holds
        what resuming needs (weights, optimiser, scheduler, counters, data position)."""
        if not self.is_main:
            return
        training = None
        if name == "last.ckpt":
            training = {
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "state": dict(self.state),
                "ema_updates": self.ema.updates,
                "wall_s": self.wall_seconds(),
            }
        save_checkpoint(self.run_dir / name, self.ema.module.state_dict(), self.metadata(metrics), training)

    def _resume(self, new_data: bool = False) -> None:
        path = self.run_dir / "last.ckpt"
        payload, metadata = read_checkpoint(path)
        if "training" not in payload:
            raise ValueError(f"{path} holds no training state (an inference checkpoint cannot be resumed)")
        differences = _config_differences(metadata["train_config"], self.config.to_dict()) + self._store_changes(metadata)
        data_changes = [d for d in differences if d.startswith("data.")]
        if len(differences) > (len(data_changes) if new_data else 0):
            hint = " (data.* settings may change with --new-data)" if data_changes and not new_data else ""
            raise ValueError(f"cannot resume {path} with a different config{hint}: {'; '.join(differences)}")
        training = payload["training"]
        self.model.load_state_dict(training["model"])
        self.ema.module.load_state_dict(payload["model"])
        self.ema.updates = int(training["ema_updates"])
        self._wall_before = float(training.get("wall_s", 0.0))  # older runs: counted from this resume
        self.optimizer.load_state_dict(training["optimizer"])
        _use_optimizer_implementation(self.optimizer, self.config.run.fused_optimizer)
        self.scheduler.load_state_dict(training["scheduler"])
        self.state.update(training["state"])
        self.state["stopped"] = ""
        self._go_on_with_cycle(training["state"], metadata)
        if self.is_main:  # lines logged after the checkpoint will be written again
            log = self.run_dir / "metrics.jsonl"
            if log.exists():
                kept = [line for line in log.read_text().splitlines()
                        if line and json.loads(line).get("step", 0) <= self.state["step"]]
                log.write_text("".join(line + "\n" for line in kept))
        if new_data and data_changes:  # unchanged data: an exact resume, as without the flag
            self._continue_on_new_data(metadata["train_config"]["data"], data_changes)

    def _go_on_with_cycle(self, saved_state: dict, metadata: dict) -> None:
        """The schedule's cycle from the current step, after a resume or a continuation: the saved cycle
        (older runs: one over their saved budget), kept, extended or re-planned for ``run.max_steps``."""
        if self.config.optim.schedule == "plateau":
            return
        saved = tuple(saved_state.get("cycle", (0, metadata["train_config"]["run"]["max_steps"])))
        self.state["cycle"] = list(next_cycle(saved, self.state["step"], self.config.run.max_steps,
                                              self.config.optim.warmup_steps))

    def _continue_from_snapshot(self, path: Path) -> None:
        """Start this empty run folder from the run snapshot at ``path`` (train/snapshot.py): its EMA
        weights as weights and EMA, its counters, hours and curve; the data from a fresh pass; a fresh
        optimiser, its rate re-warmed over ``optim.warmup_steps``. A config that differs from the
        snapshot's run in anything but ``data.*`` (and what a resume may change) is refused."""
        weights, metadata = read_run_snapshot(path)
        self._check_model_config(metadata, f"snapshot {str(path)!r}")
        differences = [d for d in _config_differences(metadata.get("train_config", {}), self.config.to_dict())
                       if not d.startswith("data.")]
        if differences:
            raise ValueError(f"cannot continue the run of snapshot {str(path)!r} with a different config: "
                             f"{'; '.join(differences)}")
        self.model.load_state_dict(weights)
        self.ema.module.load_state_dict(weights)
        snapshot = metadata["run_snapshot"]
        self.ema.updates, self._wall_before = int(snapshot["ema_updates"]), float(snapshot["wall_s"])
        counters, step = snapshot["state"], int(snapshot["state"]["step"])
        self.state.update(step=step, epoch=int(counters.get("epoch", 0)), batch_in_pass=0,
                          rewarm=[step, self.config.optim.warmup_steps])
        self.state["pass"] = int(counters.get("pass", -1)) + 1
        self._go_on_with_cycle(counters, metadata)
        if self.is_main:  # the curve goes on in this folder's log
            lines = [json.dumps(record) for record in snapshot.get("curve", [])]
            (self.run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
        self._log({"step": step, "event": "continued from snapshot", "snapshot": str(path),
                   "from": snapshot.get("from"), "hours": self._wall_before / 3600.0})

    def _store_changes(self, metadata: dict) -> list[str]:
        """What differs between the store the checkpoint trained on and ``data.store`` as it is now
        (a store rebuilt in place with more pairs), as ``data.store (contents): ...`` lines."""
        saved, now = metadata.get("data", {}), _store_contents(self.data.store.meta)
        return [f"data.store (contents): {key} {saved[key]!r} -> {value!r}" for key, value in now.items()
                if key in saved and saved[key] != value]

    def _continue_on_new_data(self, old_data: dict, changes: list[str]) -> None:
        """After :meth:`_resume` with changed ``data.*``: the weights, optimiser, EMA and schedule go on;
        the batch order of the new data starts with a fresh pass (the saved position indexes the old
        order). ``best_val`` is kept only when the scored validation pairs are the same as the run's
        (``data.score_sources``, ``scored_val_fingerprint``); otherwise the next validation sets it."""
        if self.state["batch_in_pass"]:
            self.state["pass"] += 1
            self.state["batch_in_pass"] = 0
        old = config_from_dict(DataConfig, old_data, "data")
        comparable = Path(old.store).exists() and scored_val_fingerprint(old) == self.data.scored_val_fingerprint()
        if not comparable:
            self.state["best_val"], self.state["epochs_since_best"] = math.inf, 0
        self._log({"step": self.state["step"], "event": "new data", "changes": changes,
                   "best_val_kept": comparable})

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _all_reduce(self, tensor: Tensor) -> Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    # ----------------------------------------------------------------------------------------------
    def train_step(self, batch: CrystalBatch, global_atoms: int, global_structures: int) -> Tensor:
        """One optimiser step on this rank's share of a global batch; returns the loss parts [L, 2]."""
        self.ddp_model.train()
        b = batch.to(self.device, self.dtype)
        pos_layers, cell_layers = self.ddp_model(b.pos, b.z, b.cell, b.pbc, b.ptr, b.edge_index, b.shifts)
        loss, parts = layerwise_loss(pos_layers, cell_layers, b.target_pos, b.target_cell,
                                     global_atoms / self.world_size, 9.0 * global_structures / self.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        self.ema.update(self.model)
        return parts.detach() / self.world_size

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> dict:
        """Validation of ``model`` (default: the EMA model), last layer, in Å: coordinate MAE pooled
        over atoms x 3 (``val_coord_mae``) and per source (``val_coord_mae/<source>``), cell MAE, each
        source's MAE over Dummy's (the input taken as the prediction, ``val_ratio/<source>``) and
        ``val_score``, the mean of those ratios (of ``data.score_sources`` where named): the selection
        criterion, so that a source with many atoms does not outweigh the others."""
        model = model if model is not None else self.ema.module
        model.eval()
        names = sorted(set(self.data.val_source.values()))
        sums = torch.zeros(len(names), 5, dtype=torch.float64)  # model |dx|, Dummy |dx|, 3N, |dL|, 9B per source
        for global_batch in self.data.val_batches:
            share = global_batch[self.rank::self.world_size]
            if len(share) == 0:
                continue
            b = self.data.store.batch(share).to(self.device, self.dtype)
            pos_layers, cell_layers = model(b.pos, b.z, b.cell, b.pbc, b.ptr, b.edge_index, b.shifts)
            structure = atom_structure_index(b.ptr.cpu(), b.pos.shape[0])
            rows = torch.tensor([names.index(self.data.val_source[int(i)]) for i in share])
            per_structure = torch.zeros(b.num_structures, 5, dtype=torch.float64)
            per_structure[:, 4] = 9.0
            per_structure[:, 0].index_add_(0, structure, (pos_layers[-1] - b.target_pos).abs().sum(1).double().cpu())
            per_structure[:, 1].index_add_(0, structure, (b.pos - b.target_pos).abs().sum(1).double().cpu())
            per_structure[:, 2] = 3.0 * torch.diff(b.ptr).double().cpu()
            per_structure[:, 3] = (cell_layers[-1] - b.target_cell).abs().sum((1, 2)).double().cpu()
            sums.index_add_(0, rows, per_structure)
        self._all_reduce(sums)
        total = sums.sum(0)
        metrics = {"val_coord_mae": float(total[0] / total[2]), "val_cell_mae": float(total[3] / total[4])}
        ratios = []
        for name, row in zip(names, sums):
            metrics[f"val_coord_mae/{name}"] = float(row[0] / row[2])
            metrics[f"val_ratio/{name}"] = float(row[0] / row[1].clamp(min=1e-12))
            if name in self.data.score_names:
                ratios.append(metrics[f"val_ratio/{name}"])
        metrics["val_score"] = sum(ratios) / len(ratios)
        return metrics

    def _end_epoch(self) -> None:
        metrics = self.validate()
        self.state["epoch"] += 1
        value = metrics["val_score"]
        if self.config.optim.schedule == "plateau":
            self.scheduler.step(value)
        improved = value < self.state["best_val"]
        if improved:
            self.state["best_val"] = value
            self.state["epochs_since_best"] = 0
            self._save("best.ckpt", metrics)
        else:
            self.state["epochs_since_best"] += 1
        self._log({"step": self.state["step"], "epoch": self.state["epoch"], **metrics,
                   "best_val_score": self.state["best_val"], "lr": self.optimizer.param_groups[0]["lr"],
                   "hours": self.wall_seconds() / 3600.0})
        if self.state["epochs_since_best"] > self.config.run.early_stopping_patience:
            self.state["stopped"] = f"early stopping: {self.state['epochs_since_best']} pseudo-epochs without improvement"
        elif self.state["epoch"] >= self.config.run.max_epochs:
            self.state["stopped"] = f"max_epochs ({self.config.run.max_epochs}) reached"

    def train(self) -> dict:
        """Run until max_steps, max_epochs or early stopping; returns the final counters."""
        from tqdm import tqdm

        cfg = self.config
        num_atoms = self.data.store.num_atoms
        schedule = self.budget_schedule()
        bar = tqdm(total=cfg.run.steps_per_epoch, initial=self.state["step"] % cfg.run.steps_per_epoch,
                   desc=f"epoch {self.state['epoch'] + 1}", unit="step", file=sys.stderr,
                   disable=not (cfg.run.progress and self.is_main))
        self._window = (time.perf_counter(), 0)
        self._cpu_start = time.process_time()
        self._wall_start = time.perf_counter()
        try:
            while not self.state["stopped"]:
                if cfg.run.max_steps and self.state["step"] >= cfg.run.max_steps:
                    self.state["stopped"] = f"max_steps ({cfg.run.max_steps}) reached"
                    break
                batches, loader = self.data.pass_loader(self.state["pass"], self.state["batch_in_pass"])
                for global_batch, batch in zip(batches, loader):
                    self._set_learning_rate(schedule)
                    parts = self.train_step(batch, int(num_atoms[global_batch].sum()), len(global_batch))
                    self.state["step"] += 1
                    self.state["batch_in_pass"] += 1
                    self._after_step(parts, len(global_batch), bar)
                    self._check_cpu_budget()
                    if self.state["stopped"] or (cfg.run.max_steps and self.state["step"] >= cfg.run.max_steps):
                        break
                else:
                    self.state["pass"] += 1
                    self.state["batch_in_pass"] = 0
        except KeyboardInterrupt:
            self._save("last.ckpt")  # nothing done is lost; --resume continues from here
            raise
        finally:
            bar.close()
            self._wall_before, self._wall_start = self.wall_seconds(), None  # a later train() adds to it
        self._save("last.ckpt")
        if not (self.run_dir / "best.ckpt").exists():
            self._save("best.ckpt")  # no pseudo-epoch finished yet: still leave a usable model behind
        return {"step": self.state["step"], "epoch": self.state["epoch"], "best_val_score": self.state["best_val"],
                "stopped": self.state["stopped"], "run_dir": str(self.run_dir)}

    def wall_seconds(self) -> float:
        """Wall-clock seconds this run has spent in :meth:`train`, over all its resumptions (saved in
        ``last.ckpt``; logged as ``hours``): the hours axis of a learning curve across sessions."""
        running = time.perf_counter() - self._wall_start if self._wall_start is not None else 0.0
        return self._wall_before + running

    def _check_cpu_budget(self) -> None:
        """Stop after ``run.max_cpu_minutes`` of this process's CPU time (all ranks stop together: rank
        0's clock decides, so no rank waits for another in DDP)."""
        budget = self.config.run.max_cpu_minutes
        if budget <= 0:
            return
        spent = torch.tensor([(time.process_time() - self._cpu_start) / 60.0 if self.is_main else 0.0])
        if float(self._all_reduce(spent)) >= budget:
            self.state["stopped"] = f"max_cpu_minutes ({budget}) reached"

    def _after_step(self, parts: Tensor, structures: int, bar: Any) -> None:
        """Log every ``log_every`` steps (losses, rate over the window since the last log); validate and
        save at the end of each pseudo-epoch; save ``last.ckpt`` every ``checkpoint_every`` steps."""
        cfg = self.config
        step = self.state["step"]
        window_start, window_structures = self._window[0], self._window[1] + structures
        self._window = (window_start, window_structures)
        bar.update(1)
        if step % cfg.run.log_every == 0:
            parts = self._all_reduce(parts)
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "epoch": self.state["epoch"], "loss": float(parts.sum()),
                      "loss_pos_last": float(parts[-1, 0]), "loss_cell_last": float(parts[-1, 1]),
                      "lr": self.optimizer.param_groups[0]["lr"],
                      "structures_per_s": window_structures / elapsed if elapsed > 0 else 0.0,
                      "hours": self.wall_seconds() / 3600.0}
            self._log(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            self._window = (time.perf_counter(), 0)
        if step % cfg.run.steps_per_epoch == 0:
            self._end_epoch()
            self._save("last.ckpt")
            bar.reset()
            bar.set_description(f"epoch {self.state['epoch'] + 1}")
        elif step % cfg.run.checkpoint_every == 0:
            self._save("last.ckpt")

    def close(self) -> None:
        """Release the run folder and the process group."""
        if self._run_lock is not None:
            self._run_lock.close()  # closing the file drops its flock
            self._run_lock = None
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig, resume: bool = False, new_data: bool = False,
          continue_from: str | Path | None = None) -> dict:
    """Train as ``config`` says (``resume``: continue ``run.dir``, ``new_data``: on changed ``data.*``,
    ``continue_from``: start an empty ``run.dir`` from a run snapshot); returns the final counters."""
    trainer = Trainer(config, resume=resume, new_data=new_data, continue_from=continue_from)
    try:
        return trainer.train()
    finally:
        trainer.close()
