"""How far a prediction is likely to be from the relaxed structure: ``expected_error``.

The model's layers each move the structure; how much they moved it, and how much the last layer still
did, says how far from its minimum the input was and how settled the prediction is. Those signals
(:data:`FEATURES`, computed by :func:`structure_features` from the layer outputs) enter a linear model
of the logarithm of the coordinate MAE, fitted by least squares on pairs of the training split
(:func:`fit_error_model`; ``scripts/calibrate_confidence.py`` runs it and stores the result in the
checkpoint's JSON metadata under ``confidence``). ``expected_error`` is then the expected coordinate
MAE in Å, ``exp(mean + variance / 2)`` of the fitted log-normal. Its rank correlation with the actual
error on each validation source is in the model card; it ranks, it does not bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: Per-structure signals, each in Å except ``volume_change`` (relative) and ``num_atoms``.
FEATURES = ("total_move_mean", "total_move_max", "last_move_mean", "last_move_max", "last_cell_change",
            "volume_change", "num_atoms")
#: Added before taking logarithms: moves below it (Å) are all "settled".
FLOOR = 1e-4


def structure_features(pos_layers: torch.Tensor, cell_layers: torch.Tensor, ptr: torch.Tensor, b: int,
                       input_pos: torch.Tensor, input_cell: torch.Tensor) -> dict[str, float]:
    """The :data:`FEATURES` of structure ``b`` of a batch. Layers are ``[L,N,3]`` and ``[L,B,3,3]``
    (Å); ``input_pos [N,3]``, ``input_cell [B,3,3]``; a one-layer model's last layer is compared with
    the input."""
    a0, a1 = int(ptr[b]), int(ptr[b + 1])
    previous_pos = pos_layers[-2] if pos_layers.shape[0] > 1 else input_pos
    previous_cell = cell_layers[-2] if cell_layers.shape[0] > 1 else input_cell
    last = (pos_layers[-1, a0:a1] - previous_pos[a0:a1]).norm(dim=1)
    total = (pos_layers[-1, a0:a1] - input_pos[a0:a1]).norm(dim=1)
    volume_in = torch.det(input_cell[b]).abs()
    empty = a1 == a0
    return {
        "total_move_mean": 0.0 if empty else float(total.mean()),
        "total_move_max": 0.0 if empty else float(total.max()),
        "last_move_mean": 0.0 if empty else float(last.mean()),
        "last_move_max": 0.0 if empty else float(last.max()),
        "last_cell_change": float((cell_layers[-1, b] - previous_cell[b]).abs().max()),
        "volume_change": float((torch.det(cell_layers[-1, b]).abs() / volume_in - 1).abs()),
        "num_atoms": float(a1 - a0),
    }


def _design(rows: list[dict[str, float]]) -> np.ndarray:
    logs = np.log(np.array([[row[name] for name in FEATURES] for row in rows], dtype=np.float64) + FLOOR)
    return np.hstack([logs, np.ones((len(rows), 1))])


@dataclass(frozen=True)
class ErrorModel:
    """``log(coord MAE) ~ weights . log(features + FLOOR) + bias``, residual variance ``variance``."""

    weights: tuple[float, ...]
    bias: float
    variance: float
    fitted_on: str = ""

    def expected_error(self, features: dict[str, float]) -> float:
        """Expected coordinate MAE (Å) of one prediction with these :data:`FEATURES`."""
        x = _design([features])[0]
        return math.exp(float(np.dot(x[:-1], self.weights)) + self.bias + 0.5 * self.variance)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "floor": FLOOR, "weights": list(self.weights), "bias": self.bias,
                "variance": self.variance, "fitted_on": self.fitted_on}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ErrorModel | None":
        """The model stored in a checkpoint's metadata (``confidence``), or None when there is none or
        it was fitted on other features than this version computes."""
        entry = metadata.get("confidence")
        if not entry or list(entry.get("features", [])) != list(FEATURES) or entry.get("floor") != FLOOR:
            return None
        return cls(tuple(float(w) for w in entry["weights"]), float(entry["bias"]), float(entry["variance"]),
                   str(entry.get("fitted_on", "")))


def fit_error_model(rows: list[dict[str, float]], errors: np.ndarray, fitted_on: str = "") -> ErrorModel:
    """Least-squares fit of log coordinate MAE (``errors`` [n], Å) on log features (``rows``, n dicts)."""
    errors = np.asarray(errors, dtype=np.float64)
    if len(rows) != len(errors) or len(rows) <= len(FEATURES) + 1:
        raise ValueError(f"need more than {len(FEATURES) + 1} structures with one error each, got "
                         f"{len(rows)} feature rows and {len(errors)} errors")
    x, y = _design(rows), np.log(errors + FLOOR)
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coefficients
    return ErrorModel(tuple(float(c) for c in coefficients[:-1]), float(coefficients[-1]),
                      float(residual.var()), fitted_on)


def prediction_confidence(pos_layers: torch.Tensor, cell_layers: torch.Tensor, ptr: torch.Tensor, b: int,
                          input_pos: torch.Tensor, input_cell: torch.Tensor,
                          error_model: ErrorModel | None = None) -> dict[str, float]:
    """The confidence entries of structure ``b`` (arguments as :func:`structure_features`):
    ``last_layer_max_move`` (Å, largest atom move of the last layer), ``last_layer_cell_change`` (Å,
    largest cell-entry change of the last layer) and, with an ``error_model``, ``expected_error`` (Å)."""
    features = structure_features(pos_layers, cell_layers, ptr, b, input_pos, input_cell)
    out = {"last_layer_max_move": features["last_move_max"], "last_layer_cell_change": features["last_cell_change"]}
    if error_model is not None:
        out["expected_error"] = error_model.expected_error(features)
    return out
