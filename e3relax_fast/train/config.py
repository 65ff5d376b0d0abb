"""Typed training configuration with the paper's recipe as defaults (docs/training.md, "The recipe").

YAML layout: ``model`` (:class:`E3RelaxConfig`), ``data``, ``optim``, ``run`` sections. Unknown keys
are errors; ``--set section.key=value`` overrides any value; the resolved config is written next to
every run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..data.perturb import PerturbConfig
from ..model import E3RelaxConfig
from ..model.config import YamlConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Fresh perturbed inputs for pairs of other sources than ``--structures`` (``train/augment.py``,
    the same mechanism as the store's perturbation pairs, ``data/perturb.py``): a share of the
    training pairs get, each time they are drawn, a new input made from their relaxed side.

    Attributes:
        fraction: probability that a drawn training pair gets a perturbed input (0: never).
        source_contains: only pairs whose store source contains this text (empty: every pair); e.g.
            ``chgnet_pairs`` leaves Perov-5, whose inputs are always the ideal cubic cell, as it is.
        strain: half-width of each entry of the random symmetric strain (the pair generator's 0.04).
        volume: volume drawn from (1 +- volume) times the pair's unrelaxed volume.
        rattle_min / rattle_max: range of the per-structure rattle distance, Å (the generator's 0.02-0.1).
    """

    fraction: float = 0.0
    source_contains: str = ""
    strain: float = 0.04
    volume: float = 0.08
    rattle_min: float = 0.02
    rattle_max: float = 0.1

    def perturbation(self) -> PerturbConfig:
        return PerturbConfig(self.strain, self.volume, self.rattle_min, self.rattle_max)


@dataclass(frozen=True)
class DataConfig:
    """Where the pairs come from and how they are batched.

    Attributes:
        store: folder written by ``e3relax preprocess``.
        train_split / val_split: split names in the store.
        max_structures_per_batch: structures per optimiser step (the paper: 32).
        max_atoms_per_batch: atom budget per step (0: none); a batch closes at whichever limit comes first.
        num_workers: DataLoader worker processes assembling batches.
        augment: re-perturbed inputs for training pairs (off by default).
        source_weights: draws per pass of each pair of a source, by the source's name in the logs
            (``mp:perturbed``, ``mp_pairs2``, ``mp_pairs2:path``, ...; ``e3relax_fast.data.store.source_name``);
            unnamed sources 1. A weight of 2 draws each pair twice per pass, 0.25 a quarter of them (a
            fresh random quarter every pass), 0 never (train/batching.py, ``BatchOrder``).
        score_sources: the sources whose validation ratios ``val_score`` averages (empty: all of the
            validation split's). Naming them keeps the score, and the choice of ``best.ckpt``, comparable
            when a run continues on a store with more sources (``e3relax train --resume --new-data``).
    """

    store: str = ""
    train_split: str = "train"
    val_split: str = "val"
    max_structures_per_batch: int = 32
    max_atoms_per_batch: int = 0
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    source_weights: dict[str, float] = field(default_factory=dict)
    score_sources: list[str] = field(default_factory=list)


#: ``optim.schedule`` values: the paper's ReduceLROnPlateau, or a warm-up and a decay to ``final_lr``
#: at the end of the step budget (``run.max_steps``), e3relax_fast/train/schedule.py.
SCHEDULES = ("plateau", "cosine", "linear")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (amsgrad), global-norm clipping, EMA of the weights and the learning-rate schedule.

    Attributes:
        schedule: ``plateau`` (the paper: ReduceLROnPlateau on the validation score, ``plateau_*``),
            or ``cosine`` / ``linear``: ``warmup_steps`` of linear warm-up from ``lr / warmup_steps``
            to ``lr``, then a decay to ``final_lr`` at ``run.max_steps`` (which must be set). Under a
            fixed step budget a decay to ~0 learns more than a constant rate.
        warmup_steps: steps of the warm-up (budgeted schedules; also at each re-warm, docs/training.md).
        final_lr: learning rate at the end of the budget (budgeted schedules).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    amsgrad: bool = True
    clip_grad_norm: float = 150.0
    ema_decay: float = 0.999
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    min_lr: float = 1e-8
    schedule: str = "plateau"
    warmup_steps: int = 0
    final_lr: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    """Length, checkpoints, logging and hardware of a run.

    Attributes:
        dir: run folder (config, versions, metrics log, checkpoints).
        seed: seeds weights and data order.
        steps_per_epoch: optimiser steps per pseudo-epoch; validation, LR schedule and early stopping
            act once per pseudo-epoch (the paper: 800).
        max_epochs: pseudo-epochs at most (the paper: 800).
        max_steps: optimiser steps at most (0: no limit).
        max_cpu_minutes: stop once this process has used this much CPU time in this session of the run
            (0: no limit); what equal-compute comparisons of recipes need (scripts/recipe_study.py).
        early_stopping_patience: stop after this many pseudo-epochs without a better validation
            coordinate MAE (the paper: 15).
        checkpoint_every: steps between resumable checkpoints (``last.ckpt``).
        log_every: steps between training-loss lines in ``metrics.jsonl``.
        init_from: checkpoint whose weights start the run (fine-tuning); empty: random init.
        device / dtype / backend: where and how the model runs.
        matmul_dtype: ``bfloat16`` trains the channel-mixing products in bfloat16 with float32 master
            weights (``E3Relax.train_matmuls_in_bfloat16``; worth it only on CPUs with bfloat16
            hardware, which ``e3relax info`` reports); the EMA model is validated in ``dtype``.
        compile: run the training steps through ``torch.compile`` (inductor, dynamic shapes): 1.26x the
            structures/s of the eager step on the release-4 recipe (one core, side by side), for about
            seven minutes of compiling per process at the start of every session; the EMA model and
            validation stay eager. Off by default: short runs never earn the compile time back.
        tune_allocator: on the CPU, keep freed memory for reuse instead of handing it back to the OS
            (``e3relax_fast.allocator.tune_cpu_allocator``, process-wide): otherwise every large
            per-edge tensor of every step is page-faulted in afresh (docs/performance.md, "Training").
        fused_optimizer: run AdamW's update as one fused kernel over each parameter (``fused=True``)
            instead of a Python loop of element-wise operations: the same update to rounding, 2.8x
            faster on the CPU (28 against 10 CPU-ms for ``small``), about 2% of a training step
            (docs/performance.md, "Training"). Off only to compare with the loop.
        progress: show progress bars.
    """

    dir: str = "runs/e3relax"
    seed: int = 0
    steps_per_epoch: int = 800
    max_epochs: int = 800
    max_steps: int = 0
    max_cpu_minutes: float = 0.0
    early_stopping_patience: int = 15
    checkpoint_every: int = 100
    log_every: int = 10
    init_from: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    matmul_dtype: str = "float32"
    backend: str = "auto"
    compile: bool = False
    tune_allocator: bool = True
    fused_optimizer: bool = True
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig(YamlConfig):
    model: E3RelaxConfig = field(default_factory=E3RelaxConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.data.max_structures_per_batch < 1:
            raise ValueError("data.max_structures_per_batch must be >= 1")
        if self.data.max_atoms_per_batch < 0:
            raise ValueError("data.max_atoms_per_batch must be >= 0 (0: no atom budget)")
        if self.run.steps_per_epoch < 1 or self.run.max_epochs < 1:
            raise ValueError("run.steps_per_epoch and run.max_epochs must be >= 1")
        augment = self.data.augment
        if not 0.0 <= augment.fraction <= 1.0:
            raise ValueError(f"data.augment.fraction must be in [0, 1], got {augment.fraction}")
        try:
            augment.perturbation()
        except ValueError as err:
            raise ValueError(f"data.augment: {err}") from None
        if self.run.matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"run.matmul_dtype must be float32 or bfloat16, got {self.run.matmul_dtype!r}")
        if self.run.dtype not in ("float32", "float64"):
            raise ValueError(f"run.dtype must be float32 or float64, got {self.run.dtype!r}")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.optim.ema_decay}")
        if self.run.checkpoint_every < 1 or self.run.log_every < 1:
            raise ValueError("run.checkpoint_every and run.log_every must be >= 1")
        self._check_schedule()
        for name, weight in self.data.source_weights.items():
            if not (weight >= 0.0 and weight < 1e3):
                raise ValueError(f"data.source_weights.{name} must be in [0, 1000), got {weight}")

    def _check_schedule(self) -> None:
        optim = self.optim
        if optim.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {optim.schedule!r}")
        if optim.warmup_steps < 0 or not 0.0 <= optim.final_lr <= optim.lr:
            raise ValueError("optim.warmup_steps must be >= 0 and optim.final_lr in [0, optim.lr]")
        if optim.schedule != "plateau" and self.run.max_steps <= optim.warmup_steps:
            raise ValueError(f"optim.schedule={optim.schedule!r} decays over the step budget: set run.max_steps "
                             f"above optim.warmup_steps ({optim.warmup_steps}), got {self.run.max_steps}")

    def replace(self, **sections: dict) -> "TrainConfig":
        """A copy with fields of sections changed: ``cfg.replace(run={"max_steps": 10})``."""
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, **changed)
