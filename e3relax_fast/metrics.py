"""How close a predicted structure is to the relaxed reference, and the Dummy baseline.

Per structure (prediction ``P``, reference ``R``, both with the same atoms in the same order and in the
same Cartesian frame):

- ``coord_mae`` (Å): mean over atoms x 3 of ``|x_P - x_R|``, the reference unwrapped first to the
  periodic image (of its own cell) nearest each predicted atom;
- ``metric_tensor_error`` (Å²): ``||L_P L_P^T - L_R L_R^T||_F``, rotation-invariant;
- ``volume_error``: ``|V_P - V_R| / V_R`` (relative);
- ``cell_mae`` (Å): mean of ``|L_P - L_R|`` over the 9 cell entries;
- ``match``: pymatgen ``StructureMatcher`` (``MATCHER_TOLERANCES``) finds P and R the same structure;
- ``spacegroup_preserved``: spglib gives P the space group of R at ``SYMPREC`` Å.

The Dummy baseline takes the unrelaxed input as the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

from .data.convert import structure_arrays, unwrap_positions

#: StructureMatcher tolerances: pymatgen's defaults, printed with every summary.
MATCHER_TOLERANCES = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
#: spglib symmetry tolerance, Å.
SYMPREC = 0.1

GEOMETRY_METRICS = ("coord_mae", "metric_tensor_error", "volume_error", "cell_mae")
ALL_METRICS = GEOMETRY_METRICS + ("match", "spacegroup_preserved")


def geometry_metrics(pred_pos: np.ndarray, pred_cell: np.ndarray, ref_pos: np.ndarray, ref_cell: np.ndarray
                     ) -> dict[str, float]:
    """The four geometric metrics of one structure: positions [n,3] and cells [3,3] in Å."""
    pred_pos, pred_cell = np.asarray(pred_pos, np.float64), np.asarray(pred_cell, np.float64)
    ref_pos, ref_cell = np.asarray(ref_pos, np.float64), np.asarray(ref_cell, np.float64)
    if pred_pos.shape != ref_pos.shape:
        raise ValueError(f"prediction has {len(pred_pos)} atoms, reference {len(ref_pos)}")
    if len(ref_pos):
        unwrapped = unwrap_positions(torch.from_numpy(ref_pos), torch.from_numpy(ref_cell),
                                     torch.from_numpy(pred_pos)).numpy()
        coord_mae = float(np.abs(pred_pos - unwrapped).mean())
    else:
        coord_mae = 0.0
    ref_volume = abs(float(np.linalg.det(ref_cell)))
    return {
        "coord_mae": coord_mae,
        "metric_tensor_error": float(np.linalg.norm(pred_cell @ pred_cell.T - ref_cell @ ref_cell.T)),
        "volume_error": abs(abs(float(np.linalg.det(pred_cell))) - ref_volume) / ref_volume,
        "cell_mae": float(np.abs(pred_cell - ref_cell).mean()),
    }


def _pymatgen(arrays: tuple) -> Any:
    from pymatgen.core import Lattice, Structure

    pos, z, cell, pbc = arrays
    return Structure(Lattice(cell), [int(v) for v in z], pos, coords_are_cartesian=True)


def spacegroup_number(arrays: tuple, symprec: float = SYMPREC) -> int:
    """International space-group number from spglib (0 when spglib finds none)."""
    import spglib

    pos, z, cell, _ = arrays
    frac = np.linalg.solve(np.asarray(cell).T, np.asarray(pos).T).T
    error_module = getattr(spglib, "error", None)
    if error_module is not None and hasattr(error_module, "OLD_ERROR_HANDLING"):
        error_module.OLD_ERROR_HANDLING = False  # spglib >= 2.5: raise instead of returning None
    try:
        dataset = spglib.get_symmetry_dataset((np.asarray(cell), frac, np.asarray(z)), symprec=symprec)
    except Exception:  # noqa: BLE001 - spglib finding no symmetry is an answer, not a failure
        return 0
    return int(dataset.number) if dataset is not None else 0


def structure_metrics(pred: Any, ref: Any, symmetry: bool = True) -> dict[str, float]:
    """All metrics of one prediction against its reference (Structures, Atoms or ``(pos, z, cell, pbc)``)."""
    p = pred if isinstance(pred, tuple) else structure_arrays(pred, "prediction")
    r = ref if isinstance(ref, tuple) else structure_arrays(ref, "reference")
    if not np.array_equal(np.asarray(p[1]), np.asarray(r[1])):
        raise ValueError("prediction and reference hold different atoms (or a different order)")
    out = geometry_metrics(p[0], p[2], r[0], r[2])
    if symmetry:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        out["match"] = float(StructureMatcher(**MATCHER_TOLERANCES).fit(_pymatgen(p), _pymatgen(r)))
        out["spacegroup_preserved"] = float(spacegroup_number(p) == spacegroup_number(r))
    return out


@dataclass
class EvaluationRow:
    id: str
    method: str  # "model" or "dummy"
    group: str
    metrics: dict[str, float]


def evaluate_pairs(items: Iterable[tuple[str, str, Any, Any, Any]], symmetry: bool = True) -> list[EvaluationRow]:
    """Rows for ``(id, group, prediction, reference, unrelaxed input)`` items: one for the model and
    one for the Dummy baseline (input as prediction) per structure."""
    rows = []
    for structure_id, group, pred, ref, unrelaxed in items:
        rows.append(EvaluationRow(structure_id, "model", group, structure_metrics(pred, ref, symmetry)))
        if unrelaxed is not None:
            rows.append(EvaluationRow(structure_id, "dummy", group, structure_metrics(unrelaxed, ref, symmetry)))
    return rows


def summarize(rows: list[EvaluationRow]) -> dict[tuple[str, str], dict[str, float]]:
    """Means per (group, method), plus group ``"all"``; each with ``count``."""
    buckets: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        for group in {row.group, "all"}:
            buckets.setdefault((group, row.method), []).append(row.metrics)
    summary = {}
    for key, metrics in sorted(buckets.items()):
        names = [n for n in ALL_METRICS if n in metrics[0]]
        summary[key] = {"count": float(len(metrics)), **{n: float(np.mean([m[n] for m in metrics])) for n in names}}
    return summary


def format_summary(summary: dict[tuple[str, str], dict[str, float]]) -> str:
    """A plain-text table of :func:`summarize`, with the tolerances used."""
    names = [n for n in ALL_METRICS if any(n in v for v in summary.values())]
    header = f"{'group':<34} {'method':<6} {'count':>6} " + " ".join(f"{n:>21}" for n in names)
    lines = [header, "-" * len(header)]
    for (group, method), values in summary.items():
        cells = " ".join(f"{values[n]:>21.4f}" if n in values and not math.isnan(values[n]) else f"{'':>21}"
                         for n in names)
        lines.append(f"{group[-34:]:<34} {method:<6} {int(values['count']):>6} {cells}")
    lines.append(f"units: coord_mae, cell_mae Å; metric_tensor_error Å²; volume_error relative; match and "
                 f"spacegroup_preserved fractions (StructureMatcher {MATCHER_TOLERANCES}, spglib symprec {SYMPREC} Å)")
    return "\n".join(lines)
