"""Training: typed config, deterministic atom-budget batches, the layer-wise trainer (DDP-ready)."""

from .batching import BatchOrder, collate, pack_batches
from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .trainer import ExponentialMovingAverage, Trainer, layerwise_loss, train

__all__ = ["BatchOrder", "DataConfig", "ExponentialMovingAverage", "OptimConfig", "RunConfig",
           "TrainConfig", "Trainer", "collate", "layerwise_loss", "pack_batches", "train"]
