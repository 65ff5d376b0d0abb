"""Training: typed config, deterministic atom-budget batches, the layer-wise trainer (DDP-ready)."""

from .batching import BatchOrder
from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .trainer import ExponentialMovingAverage, Trainer, layerwise_loss, train

__all__ = ["BatchOrder", "DataConfig", "ExponentialMovingAverage", "OptimConfig", "RunConfig",
           "TrainConfig", "Trainer", "layerwise_loss", "train"]
