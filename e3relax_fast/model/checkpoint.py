"""Checkpoints: tensors plus JSON metadata, loaded with ``torch.load(weights_only=True)`` only.

A checkpoint file is a dict ``{"format", "metadata" (a JSON string), "model" (the weights to predict
with: the EMA weights when saved by the trainer)}``; a training checkpoint adds ``"training"`` (the raw
weights, optimizer and scheduler state, counters). Nothing in it needs unpickling of Python objects,
so a checkpoint handed to us by anyone is loaded safely.

Metadata keys written by the trainer: ``format_version``, ``model_config``, ``graph``,
``elements`` (atomic numbers seen in training), ``data`` (provenance), ``train_config``, ``step``,
``epoch``, ``metrics``, ``versions``, ``created``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import E3RelaxConfig
from .e3relax import E3Relax

CHECKPOINT_FORMAT = "e3relax-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model_state: dict, metadata: dict, training: dict | None = None) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "metadata": json.dumps({"format_version": CHECKPOINT_VERSION, **metadata}, sort_keys=True),
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
    }
    if training is not None:
        payload["training"] = training
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """``(payload, metadata)`` of a checkpoint file, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - say what the file is not, whatever the unpickler says
        raise ValueError(f"{path}: not a loadable e3relax checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an e3relax checkpoint (no format {CHECKPOINT_FORMAT!r})")
    try:
        metadata = json.loads(payload["metadata"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: field 'metadata' is missing or not JSON ({type(err).__name__}: {err})") from None
    if not isinstance(metadata, dict) or not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: field 'metadata' must be a JSON object and 'model' a dict of tensors")
    if metadata.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {metadata.get('format_version')}, "
                         f"this package reads {CHECKPOINT_VERSION}")
    return payload, metadata


def model_config_of(metadata: dict) -> E3RelaxConfig:
    """The model config of checkpoint metadata; checkpoints written before ``position_update`` and
    ``strain_head`` existed were trained with Cartesian updates and no strain head. Checked (bounds
    included) before any weight is allocated; a bad config is a ``ValueError`` naming the field."""
    config = metadata.get("model_config")
    if not isinstance(config, dict):
        raise ValueError("checkpoint metadata: field 'model_config' is missing or not an object")
    try:
        return E3RelaxConfig.from_dict({"position_update": "cartesian", "strain_head": False, **config})
    except (TypeError, KeyError) as err:
        raise ValueError(f"checkpoint metadata: field 'model_config' is malformed: {err}") from None


def load_model(path: str | Path, backend: str = "auto", device: str | torch.device | None = None
               ) -> tuple[E3Relax, dict]:
    """The model of a checkpoint (its prediction weights) in eval mode, with its ops chosen for
    ``backend`` on ``device`` (its weights stay on the CPU until moved), and its metadata."""
    payload, metadata = read_checkpoint(path)
    model = E3Relax(model_config_of(metadata), backend=backend, device=device)
    model.load_state_dict(payload["model"])
    return model.eval(), metadata


def write_release(source: str | Path, path: str | Path, extra_metadata: dict | None = None,
                  storage_dtype: torch.dtype = torch.float16) -> dict:
    """A release checkpoint from a training checkpoint: its prediction weights only, floating tensors
    stored as ``storage_dtype`` (float16 halves the file; :func:`load_model` copies them into the
    model's float32 parameters), metadata extended by ``extra_metadata`` (provenance, evaluation).
    Returns the metadata written."""
    payload, metadata = read_checkpoint(source)
    weights = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in payload["model"].items()}
    metadata = {**metadata, **(extra_metadata or {}), "weights_storage_dtype": str(storage_dtype).split(".")[-1]}
    metadata.pop("format_version", None)
    save_checkpoint(path, weights, metadata)
    return read_checkpoint(path)[1]
