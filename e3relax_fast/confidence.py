"""How far a prediction is likely to be from the relaxed structure: ``expected_error``.

The model's layers each move the structure; how much they moved it, and how much the last layer still
did, says how far from its minimum the input was and how settled the prediction is. Those signals
(:data:`FEATURES`, computed by :func:`structure_features` from the layer outputs) enter a linear model
of the logarithm of the coordinate MAE, fitted by least squares on pairs of the training split
(:func:`fit_error_model`; ``scripts/calibrate_confidence.py`` runs it and stores the result in the
checkpoint's JSON metadata under ``confidence``). ``expected_error`` is then the expected coordinate
MAE in Å, ``exp(mean + variance / 2)`` of the fitted log-normal. Its rank correlation with the actual
error on each validation source is in the model card; it ranks, it does not bound.

The **learned head** (:class:`ErrorHead`, metadata ``confidence_head``) reads more: the same signals and
a summary of the last layer's invariant features per structure (:func:`last_layer_summary`: the atoms'
mean scalar channels, the atoms' mean vector-channel norms, the lattice nodes' mean scalar channels),
in a ridge regression of the log error, fitted on the validation split and judged out of fold
(``scripts/calibrate_confidence.py --head``). Eager models use it when the checkpoint has
one (the features are read by a forward hook on the last layer, :class:`LastLayerCapture`); exported
artifacts return no features and keep the hand-made model.

The **rerun model** (:class:`RerunErrorModel`, metadata ``confidence_rerun``, chosen with
``confidence="rerun"``) runs the model twice more, on its own prediction and on that rerun's
(:func:`rerun_features`): a model trained on relaxation-path frames moves a geometry about as far as
it lies from the relaxed structure, so how far the reruns move the prediction, with the prediction's
own moves, enters the same kind of ridge regression (``scripts/calibrate_confidence.py --rerun``). Its
moves are measured against the lattice and its cell changes as strains, so its expected error does not
grow with the size of the cell as the Cartesian signals above do. It ranks the error best, at three
model runs per prediction; the prediction itself is the first run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .ops import atom_structure_index

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
                          error_model: "ErrorModel | ErrorHead | RerunErrorModel | None" = None,
                          summaries: np.ndarray | None = None, rerun: dict[str, float] | None = None
                          ) -> dict[str, float]:
    """The confidence entries of structure ``b`` (arguments as :func:`structure_features`):
    ``last_layer_max_move`` (Å, largest atom move of the last layer), ``last_layer_cell_change`` (Å,
    largest cell-entry change of the last layer) and, with an ``error_model``, ``expected_error`` (Å):
    from a :class:`RerunErrorModel` when structure ``b``'s ``rerun`` signals are given
    (:func:`rerun_features`), from an :class:`ErrorHead` when the batch's last-layer ``summaries``
    [B, 3F] are given (:meth:`LastLayerCapture.summaries`), else from an :class:`ErrorModel` (a head or
    rerun model without its inputs gives none)."""
    features = structure_features(pos_layers, cell_layers, ptr, b, input_pos, input_cell)
    out = {"last_layer_max_move": features["last_move_max"], "last_layer_cell_change": features["last_cell_change"]}
    if isinstance(error_model, RerunErrorModel) and rerun is not None:
        out["expected_error"] = float(error_model.expected_errors([rerun])[0])
    elif isinstance(error_model, ErrorHead) and summaries is not None:
        out["expected_error"] = float(error_model.expected_errors([features], summaries[b:b + 1])[0])
    elif isinstance(error_model, ErrorModel):
        out["expected_error"] = error_model.expected_error(features)
    return out


#: How ``expected_error`` is found: from one run of the model (the learned head, or the hand-made model
#: where there is no head), or from two more runs on its own prediction (:class:`RerunErrorModel`).
CONFIDENCE_MODES = ("single-pass", "rerun")


def error_model_of(metadata: dict, eager: bool = True,
                   confidence: str = "single-pass") -> "ErrorModel | ErrorHead | RerunErrorModel | None":
    """The expected-error model a checkpoint's metadata holds for a ``confidence`` mode
    (:data:`CONFIDENCE_MODES`). ``"single-pass"``: the learned head when there is one and the model is
    eager (its last layer can be read), else the hand-made model, else None. ``"rerun"``: the rerun
    model, which only eager models with one in their metadata have (``ValueError`` otherwise)."""
    if confidence not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be one of {', '.join(CONFIDENCE_MODES)}, got {confidence!r}")
    if confidence == "rerun":
        rerun = RerunErrorModel.from_metadata(metadata) if eager else None
        if rerun is None:
            raise ValueError("confidence='rerun' needs a checkpoint whose metadata holds a rerun error model "
                             "('confidence_rerun', fitted by scripts/calibrate_confidence.py --rerun); this "
                             f"{'checkpoint has none' if eager else 'exported artifact cannot rerun'}: "
                             "use confidence='single-pass'")
        return rerun
    head = ErrorHead.from_metadata(metadata) if eager else None
    return head if head is not None else ErrorModel.from_metadata(metadata)


# --------------------------------------------------------------------------------------------------
# The learned head

#: The per-structure summaries of the last layer that the head reads, each ``[F]`` (F channels).
SUMMARIES = ("atom_scalars_mean", "atom_vector_norms_mean", "lattice_scalars_mean")


class LastLayerCapture:
    """Keeps the output state of an eager model's last layer (``LayerState``: h [N,F], vec [N,3,F],
    g [B,3,F], ...) while in a ``with`` block; ``state`` is None for models without ``layers``
    (exported artifacts), which then get no summary, and when not ``wanted`` (no head will read it: no
    hook is registered at all)."""

    def __init__(self, model: torch.nn.Module, wanted: bool = True):
        self.state = None
        layers = getattr(model, "layers", None) if wanted else None
        self._layer = layers[-1] if layers is not None and len(layers) else None
        self._handle = None

    def summaries(self, ptr: torch.Tensor) -> np.ndarray | None:
        """:func:`last_layer_summary` of the captured state ``[B, 3F]``, or None when nothing was captured."""
        return None if self.state is None else last_layer_summary(self.state, ptr)

    def __enter__(self) -> "LastLayerCapture":
        if self._layer is not None:
            self._handle = self._layer.register_forward_hook(lambda module, inputs, output: setattr(self, "state", output))
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()


def last_layer_summary(state, ptr: torch.Tensor) -> np.ndarray:
    """``[B, 3F]`` float64: per structure, the :data:`SUMMARIES` of a last-layer state (rotation and
    translation invariant: scalar channels and vector norms)."""
    h, vec, g = state[2].detach().double().cpu(), state[3].detach().double().cpu(), state[4].detach().double().cpu()
    ptr = ptr.cpu()
    per_atom = torch.cat([h, vec.norm(dim=1)], dim=1)  # [N, 2F]
    sums = torch.zeros(len(ptr) - 1, per_atom.shape[1], dtype=torch.float64)
    sums.index_add_(0, atom_structure_index(ptr, per_atom.shape[0]), per_atom)
    means = sums / torch.diff(ptr).clamp(min=1).unsqueeze(1).double()
    return torch.cat([means, g.mean(1)], dim=1).numpy()


def _head_design(rows: list[dict[str, float]], summaries: np.ndarray) -> np.ndarray:
    return np.hstack([_design(rows)[:, :-1], np.asarray(summaries, dtype=np.float64).reshape(len(rows), -1)])


@dataclass(frozen=True)
class ErrorHead:
    """``log(coord MAE) ~ weights . (x - center) / scale + bias`` with ``x`` the log :data:`FEATURES`
    followed by the last-layer summaries (``channels`` each); residual variance ``variance``."""

    center: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    variance: float
    channels: int
    fitted_on: str = ""

    def expected_errors(self, rows: list[dict[str, float]], summaries: np.ndarray) -> np.ndarray:
        """Expected coordinate MAE (Å) of predictions with these signals and summaries ``[n, 3F]``."""
        z = (_head_design(rows, summaries) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.exp(z @ np.asarray(self.weights) + self.bias + 0.5 * self.variance)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "summaries": list(SUMMARIES), "channels": self.channels, "floor": FLOOR,
                "center": list(self.center), "scale": list(self.scale), "weights": list(self.weights),
                "bias": self.bias, "variance": self.variance, "fitted_on": self.fitted_on}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ErrorHead | None":
        """The head stored in a checkpoint's metadata (``confidence_head``), or None when there is none
        or it reads other features or another width than this version and model give."""
        entry = metadata.get("confidence_head")
        width = (metadata.get("model_config") or {}).get("hidden_channels")
        if (not entry or list(entry.get("features", [])) != list(FEATURES) or entry.get("floor") != FLOOR
                or list(entry.get("summaries", [])) != list(SUMMARIES) or entry.get("channels") != width):
            return None
        return cls(tuple(entry["center"]), tuple(entry["scale"]), tuple(entry["weights"]), float(entry["bias"]),
                   float(entry["variance"]), int(entry["channels"]), str(entry.get("fitted_on", "")))


def fit_error_head(rows: list[dict[str, float]], summaries: np.ndarray, errors: np.ndarray, alpha: float = 0.1,
                   fitted_on: str = "") -> ErrorHead:
    """Ridge fit (penalty ``alpha`` per structure, on standardised inputs) of log coordinate MAE
    (``errors`` [n], Å) on the log signals ``rows`` and the last-layer ``summaries`` [n, 3F]."""
    center, scale, weights, bias, variance = _ridge(_head_design(rows, summaries), errors, alpha)
    return ErrorHead(center, scale, weights, bias, variance, int(np.asarray(summaries).shape[1] // len(SUMMARIES)),
                     fitted_on)


def _ridge(x: np.ndarray, errors: np.ndarray, alpha: float) -> tuple[tuple[float, ...], tuple[float, ...],
                                                                      tuple[float, ...], float, float]:
    """Ridge regression of ``log(errors + FLOOR)`` on the standardised columns of ``x [n, k]`` (penalty
    ``alpha`` per structure): ``(center, scale, weights, bias, residual variance)``."""
    errors = np.asarray(errors, dtype=np.float64)
    if len(errors) != len(x) or len(x) < 10:
        raise ValueError(f"need at least 10 structures with one error each, got {len(x)} rows and {len(errors)} errors")
    center, scale = x.mean(0), x.std(0) + 1e-8
    z, y = (x - center) / scale, np.log(errors + FLOOR)
    weights = np.linalg.solve(z.T @ z + alpha * len(y) * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    residual = y - y.mean() - z @ weights
    return (tuple(center.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), float(y.mean()),
            float(residual.var()))


# --------------------------------------------------------------------------------------------------
# The rerun model: the network run again on its own prediction

#: Per-structure signals of the prediction and of two reruns (:func:`rerun_features`). Atom moves are
#: measured against the lattice (:func:`_lattice_frame_moves`, Å) and cell changes as strains
#: (:func:`_strains`, dimensionless), so that neither grows with the size of the cell: in Cartesian
#: terms a strain of 1e-3 moves the atoms of a 40 Å supercell by 0.04 Å without any error in their
#: places. In order: the prediction against the input (atom moves mean and largest, strain largest),
#: its last layer against the one before (the same three), the first rerun against the prediction
#: (atom moves mean and largest, strain largest and mean, volume change), the first rerun's first layer,
#: the second rerun against the first, and both reruns against the prediction.
RERUN_FEATURES = ("move_mean", "move_max", "strain_max", "last_layer_move_mean", "last_layer_move_max",
                  "last_layer_strain_max", "rerun_move_mean", "rerun_move_max", "rerun_strain_max",
                  "rerun_strain_mean", "rerun_volume_change", "rerun_first_layer_move_mean",
                  "second_rerun_move_mean", "reruns_move_mean")
#: A prediction whose volume is off the input's by more than this factor (or not finite) is rerun from
#: the input: such predictions are refused anyway (relax/guards.py), and a collapsed cell has no bounded graph.
RERUN_VOLUME_FACTOR = 2.0
#: What a rerun signal that is not finite (or above it) counts as (Å, or relative for the volume).
RERUN_CAP = 1e3


def _usable(pos: torch.Tensor, cell: torch.Tensor, fallback_pos: torch.Tensor, fallback_cell: torch.Tensor,
            structure: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pos [N,3]``, ``cell [B,3,3]`` with every structure that is not finite or whose volume ratio to
    the fallback's leaves ``[1/RERUN_VOLUME_FACTOR, RERUN_VOLUME_FACTOR]`` replaced by the fallback."""
    finite_atoms = torch.isfinite(pos).all(1).to(pos.dtype)
    broken = torch.zeros(cell.shape[0], dtype=pos.dtype, device=pos.device).index_add_(0, structure, 1 - finite_atoms)
    ratio = torch.linalg.det(torch.nan_to_num(cell)).abs() / torch.linalg.det(fallback_cell).abs()
    ok = (broken == 0) & torch.isfinite(cell).flatten(1).all(1) & (ratio <= RERUN_VOLUME_FACTOR) \
        & (ratio >= 1 / RERUN_VOLUME_FACTOR)
    return (torch.where(ok[structure].unsqueeze(1), pos, fallback_pos),
            torch.where(ok.view(-1, 1, 1), cell, fallback_cell))


def _lattice_frame_moves(pos_a: torch.Tensor, cell_a: torch.Tensor, pos_b: torch.Tensor, cell_b: torch.Tensor,
                        structure: torch.Tensor) -> torch.Tensor:
    """``[N, 3]`` Å: how far each atom moved from ``(pos_a, cell_a)`` to ``(pos_b, cell_b)`` relative to
    its lattice, ``(x_b L_b^-1 - x_a L_a^-1) L_b``: zero when the atoms only follow a change of the cell."""
    # inv_ex: a singular cell (a rerun gone astray) gives non-finite moves, which rerun_features caps
    fractional_a = torch.bmm(pos_a.unsqueeze(1), torch.linalg.inv_ex(cell_a)[0].index_select(0, structure)).squeeze(1)
    fractional_b = torch.bmm(pos_b.unsqueeze(1), torch.linalg.inv_ex(cell_b)[0].index_select(0, structure)).squeeze(1)
    return torch.bmm((fractional_b - fractional_a).unsqueeze(1), cell_b.index_select(0, structure)).squeeze(1)


def _strains(cell_a: torch.Tensor, cell_b: torch.Tensor) -> torch.Tensor:
    """``[B, 9]``: ``|L_a^-1 L_b - I|``, the entries of the deformation taking cell a to cell b."""
    deformation = torch.linalg.solve_ex(cell_a, cell_b)[0] - torch.eye(3, dtype=cell_a.dtype)
    return deformation.abs().flatten(1)


@torch.no_grad()
def rerun_features(model: torch.nn.Module, pos_layers: torch.Tensor, cell_layers: torch.Tensor, z: torch.Tensor,
                   pbc: torch.Tensor, ptr: torch.Tensor, input_pos: torch.Tensor,
                   input_cell: torch.Tensor) -> list[dict[str, float]]:
    """The :data:`RERUN_FEATURES` of every structure of a batch. ``model`` (an eager
    :class:`~e3relax_fast.model.E3Relax`: it builds the graph of a geometry it is given without one) is
    run on its prediction (the last of ``pos_layers [L,N,3]``, ``cell_layers [L,B,3,3]``, on the model's
    device and dtype, as are ``z [N]``, ``pbc [B,3]``, ``ptr [B+1]``, ``input_pos [N,3]``,
    ``input_cell [B,3,3]``), then on that rerun's prediction. Trained on the frames of relaxation paths,
    the model maps a geometry near a relaxed structure onto it, so the distance it still moves its own
    prediction measures how far that prediction is from the relaxed structure (docs/relax.md)."""
    structure = atom_structure_index(ptr, pos_layers.shape[1])
    pos1, cell1 = _usable(pos_layers[-1], cell_layers[-1], input_pos, input_cell, structure)
    pos2_layers, cell2_layers = model(pos1, z, cell1, pbc, ptr)
    # a first rerun gone astray is measured as it is; only the second run needs a usable start
    start2, cell_start2 = _usable(pos2_layers[-1], cell2_layers[-1], pos1, cell1, structure)
    pos3_layers, cell3_layers = model(start2, z, cell_start2, pbc, ptr)
    double = [t.detach().double().cpu() for t in (input_pos, input_cell, pos_layers[-1], cell_layers[-1], pos1, cell1,
                                                  pos2_layers[-1], cell2_layers[-1], pos2_layers[0], cell2_layers[0],
                                                  start2, cell_start2, pos3_layers[-1], cell3_layers[-1])]
    (pos0, cell0, predicted_pos, predicted_cell, pos1, cell1, pos2, cell2, first_pos, first_cell, start2, cell_start2,
     pos3, cell3) = double
    before = len(pos_layers) - 2  # the layer before the last (-1: the input)
    pos_before = pos0 if before < 0 else pos_layers[before].detach().double().cpu()
    cell_before = cell0 if before < 0 else cell_layers[before].detach().double().cpu()
    structure, counts = structure.cpu(), torch.diff(ptr.cpu()).clamp(min=1).double()

    def mean(moves: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [B]: mean |coordinate|
        return torch.zeros(len(counts), dtype=torch.float64).index_add_(0, structure, moves.abs().mean(1)) / counts

    def largest(moves: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [B]: largest atom move
        return torch.zeros(len(counts), dtype=torch.float64).scatter_reduce_(
            0, structure, moves.norm(dim=1), "amax", include_self=True)

    # the prediction's own signals from the prediction as it is (a broken one is capped below, so it
    # never looks settled); the reruns from the usable start
    move = _lattice_frame_moves(pos0, cell0, predicted_pos, predicted_cell, structure)
    last = _lattice_frame_moves(pos_before, cell_before, predicted_pos, predicted_cell, structure)
    rerun = _lattice_frame_moves(pos1, cell1, pos2, cell2, structure)
    rerun_strain = _strains(cell1, cell2)
    columns = torch.stack([
        mean(move), largest(move), _strains(cell0, predicted_cell).max(1).values,
        mean(last), largest(last), _strains(cell_before, predicted_cell).max(1).values,
        mean(rerun), largest(rerun), rerun_strain.max(1).values, rerun_strain.mean(1),
        (torch.linalg.det(cell2) / torch.linalg.det(cell1) - 1).abs(),
        mean(_lattice_frame_moves(pos1, cell1, first_pos, first_cell, structure)),
        mean(_lattice_frame_moves(start2, cell_start2, pos3, cell3, structure)),
        mean(_lattice_frame_moves(pos1, cell1, pos3, cell3, structure))], dim=1)
    # a rerun that is not finite moved "very far": a large finite value keeps expected_error finite
    columns = torch.nan_to_num(columns, nan=RERUN_CAP, posinf=RERUN_CAP).clamp(max=RERUN_CAP)
    return [dict(zip(RERUN_FEATURES, row)) for row in columns.tolist()]


def _rerun_design(reruns: list[dict[str, float]]) -> np.ndarray:
    return np.log(np.array([[row[name] for name in RERUN_FEATURES] for row in reruns], dtype=np.float64)
                  .reshape(len(reruns), len(RERUN_FEATURES)) + FLOOR)


@dataclass(frozen=True)
class RerunErrorModel:
    """``log(coord MAE) ~ weights . (x - center) / scale + bias`` with ``x`` the log
    :data:`RERUN_FEATURES` (the prediction's own signals among them, measured against the lattice);
    residual variance ``variance``."""

    center: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    variance: float
    fitted_on: str = ""

    def expected_errors(self, reruns: list[dict[str, float]]) -> np.ndarray:
        """Expected coordinate MAE (Å) of predictions with these :data:`RERUN_FEATURES`."""
        z = (_rerun_design(reruns) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.exp(z @ np.asarray(self.weights) + self.bias + 0.5 * self.variance)

    def to_dict(self) -> dict:
        return {"rerun_features": list(RERUN_FEATURES), "floor": FLOOR,
                "center": list(self.center), "scale": list(self.scale), "weights": list(self.weights),
                "bias": self.bias, "variance": self.variance, "fitted_on": self.fitted_on}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "RerunErrorModel | None":
        """The model stored in a checkpoint's metadata (``confidence_rerun``), or None when there is
        none or it reads other features than this version computes."""
        entry = metadata.get("confidence_rerun")
        if not entry or entry.get("floor") != FLOOR or list(entry.get("rerun_features", [])) != list(RERUN_FEATURES):
            return None
        return cls(tuple(entry["center"]), tuple(entry["scale"]), tuple(entry["weights"]), float(entry["bias"]),
                   float(entry["variance"]), str(entry.get("fitted_on", "")))


def fit_rerun_model(reruns: list[dict[str, float]], errors: np.ndarray, alpha: float = 0.01,
                    fitted_on: str = "") -> RerunErrorModel:
    """Ridge fit (as :func:`fit_error_head`) of log coordinate MAE (``errors`` [n], Å) on the log
    :data:`RERUN_FEATURES` ``reruns`` (n dicts)."""
    return RerunErrorModel(*_ridge(_rerun_design(reruns), errors, alpha), fitted_on)
