"""How close a predicted structure is to the relaxed reference, and the Dummy baseline.

Per structure (prediction ``P``, reference ``R``, both with the same atoms in the same order and in the
same Cartesian frame; the columns of ``e3relax evaluate``'s CSV):

- ``coord_mae`` (Å): mean over atoms x 3 of ``|x_P - x_R|``, the reference unwrapped first to the
  periodic image (of its own cell) nearest each predicted atom;
- ``metric_tensor_error`` (Å²): ``||L_P L_P^T - L_R L_R^T||_F``, rotation-invariant;
- ``volume_error``: ``|V_P - V_R| / V_R`` (relative);
- ``cell_mae`` (Å): mean of ``|L_P - L_R|`` over the 9 cell entries;
- ``matched``: pymatgen ``StructureMatcher`` (:data:`MATCHER_TOLERANCES`, its defaults) maps P onto R;
  ``rmsd``: its root-mean-square site displacement normalised by ``(V / n)^(1/3)`` as pymatgen's
  ``get_rms_dist`` does (dimensionless; empty where unmatched), ``max_dist`` the largest one;
- per tolerance ``t`` of :data:`SYMPRECS` (1e-2 and 1e-5 Å, as Matbench Discovery): spglib's space
  group of P (``spacegroup_t``) and R (``spacegroup_ref_t``) and ``symmetry_t``, one of
  :data:`SYMMETRY_CHANGES`: ``kept`` (same space group), ``lowered`` / ``raised`` (P has fewer / more
  symmetry operations than R in the same cell), ``changed`` (another group with as many operations);
- ``volume_per_atom`` and ``volume_per_atom_ref`` (Å³), ``a b c`` and ``a_ref b_ref c_ref`` (Å): what
  the parity plots of :mod:`e3relax_fast.plots` show.

The Dummy baseline takes the unrelaxed input as the prediction. :func:`summarize` gives count, mean,
median and 90th percentile per (group, method, metric) as a pandas table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from .data.convert import structure_arrays, unwrap_positions

#: StructureMatcher tolerances: pymatgen's defaults, printed with every summary.
MATCHER_TOLERANCES = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
#: spglib symmetry tolerances (Å) and their column tags: Matbench Discovery's two.
SYMPRECS = {"1e-2": 1e-2, "1e-5": 1e-5}
SYMMETRY_CHANGES = ("kept", "lowered", "raised", "changed")

GEOMETRY_METRICS = ("coord_mae", "metric_tensor_error", "volume_error", "cell_mae")
#: The metrics of the summary, in display order, with their units.
SUMMARY_METRICS = {
    "coord_mae": "Å", "rmsd": "normalised", "max_dist": "normalised", "volume_error": "relative",
    "metric_tensor_error": "Å²", "cell_mae": "Å",
}


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


def cell_descriptors(pred_cell: np.ndarray, ref_cell: np.ndarray, num_atoms: int) -> dict[str, float]:
    """Volume per atom (Å³) and lattice lengths (Å) of prediction and reference, for parity plots."""
    out = {}
    for suffix, cell in (("", np.asarray(pred_cell, np.float64)), ("_ref", np.asarray(ref_cell, np.float64))):
        out[f"volume_per_atom{suffix}"] = abs(float(np.linalg.det(cell))) / max(num_atoms, 1)
        for name, length in zip("abc", np.linalg.norm(cell, axis=1)):
            out[f"{name}{suffix}"] = float(length)
    return out


def _pymatgen(arrays: tuple) -> Any:
    from pymatgen.core import Lattice, Structure

    pos, z, cell, pbc = arrays
    return Structure(Lattice(cell), [int(v) for v in z], pos, coords_are_cartesian=True)


def symmetry_of(arrays: tuple, symprec: float) -> tuple[int, int]:
    """``(space-group number, symmetry operations in the given cell)`` from spglib; ``(0, 0)`` when
    spglib finds none. ``arrays`` is ``(pos [n,3], z [n], cell [3,3], pbc)`` in Å."""
    from .symmetry import spglib_dataset

    pos, z, cell, _ = arrays
    dataset = spglib_dataset(np.asarray(pos, dtype=np.float64), np.asarray(z), np.asarray(cell, dtype=np.float64),
                             symprec)
    if dataset is None:
        return 0, 0
    return int(dataset.number), len(dataset.rotations)


def symmetry_change(pred: tuple[int, int], ref: tuple[int, int]) -> str:
    """One of :data:`SYMMETRY_CHANGES` for ``(space group, operations)`` of prediction and reference."""
    if pred[0] == ref[0]:
        return "kept"
    if pred[1] != ref[1]:
        return "lowered" if pred[1] < ref[1] else "raised"
    return "changed"


def reference_symmetry(r: tuple) -> dict[str, tuple[int, int]]:
    """:func:`symmetry_of` the reference at each of :data:`SYMPRECS`, by tag (found once per structure,
    shared by the model's row and the Dummy's)."""
    return {tag: symmetry_of(r, symprec) for tag, symprec in SYMPRECS.items()}


def symmetry_metrics(p: tuple, r: tuple, ref_symmetry: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """StructureMatcher match and RMSD, and the symmetry columns at each of :data:`SYMPRECS`
    (``ref_symmetry``: :func:`reference_symmetry` of ``r``, computed here when not given)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    rms = StructureMatcher(**MATCHER_TOLERANCES).get_rms_dist(_pymatgen(p), _pymatgen(r))
    out: dict[str, Any] = {"matched": float(rms is not None),
                           "rmsd": float(rms[0]) if rms is not None else float("nan"),
                           "max_dist": float(rms[1]) if rms is not None else float("nan")}
    ref_symmetry = ref_symmetry or reference_symmetry(r)
    for tag, symprec in SYMPRECS.items():
        pred_sym, ref_sym = symmetry_of(p, symprec), ref_symmetry[tag]
        out[f"spacegroup_{tag}"], out[f"spacegroup_ref_{tag}"] = pred_sym[0], ref_sym[0]
        out[f"symmetry_{tag}"] = symmetry_change(pred_sym, ref_sym)
    return out


def _arrays(structure: Any, label: str) -> tuple:
    return structure if isinstance(structure, tuple) else structure_arrays(structure, label)


def in_reference_order(structure: tuple, ref: tuple) -> tuple:
    """``structure`` (pos, z, cell, pbc) with its atoms in the reference's order: unchanged when the
    species already agree atom by atom; else each species' atoms matched one to one to the reference's
    by the shortest total periodic distance (fractional coordinates, the reference's cell). A structure
    that holds other atoms than the reference is a ``ValueError`` naming ``numbers``."""
    from scipy.optimize import linear_sum_assignment

    pos, z, cell, pbc = structure
    z, ref_z = np.asarray(z), np.asarray(ref[1])
    if np.array_equal(z, ref_z):
        return structure
    if len(z) != len(ref_z) or not np.array_equal(np.sort(z), np.sort(ref_z)):
        raise ValueError("field 'numbers': the structure holds other atoms than the reference")
    frac = np.linalg.solve(np.asarray(cell).T, np.asarray(pos).T).T
    ref_frac = np.linalg.solve(np.asarray(ref[2]).T, np.asarray(ref[0]).T).T
    order = np.empty(len(z), dtype=np.int64)
    for species in np.unique(ref_z):
        mine, theirs = np.nonzero(z == species)[0], np.nonzero(ref_z == species)[0]
        offset = frac[mine][None, :, :] - ref_frac[theirs][:, None, :]
        offset -= np.rint(offset)
        cost = np.linalg.norm(offset @ np.asarray(ref[2]), axis=2)  # [reference atom, structure atom]
        rows, columns = linear_sum_assignment(cost)
        order[theirs[rows]] = mine[columns]
    return np.asarray(pos)[order], z[order], cell, pbc


def structure_metrics(pred: Any, ref: Any, symmetry: bool = True,
                      ref_symmetry: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """All metrics of one prediction against its reference (Structures, Atoms or ``(pos, z, cell, pbc)``);
    ``ref_symmetry`` as :func:`symmetry_metrics`."""
    p, r = _arrays(pred, "prediction"), _arrays(ref, "reference")
    if not np.array_equal(np.asarray(p[1]), np.asarray(r[1])):
        raise ValueError("prediction and reference hold different atoms (or a different order)")
    out: dict[str, Any] = geometry_metrics(p[0], p[2], r[0], r[2])
    if symmetry:
        out.update(symmetry_metrics(p, r, ref_symmetry))
    out.update(cell_descriptors(p[2], r[2], len(r[1])))
    return out


@dataclass
class EvaluationRow:
    id: str
    method: str  # "model" or "dummy"
    group: str
    metrics: dict[str, Any]
    confidence: dict[str, float] = field(default_factory=dict)  # the model's, where it is known


def evaluate_pairs(items: Iterable[tuple], symmetry: bool = True) -> list[EvaluationRow]:
    """Rows for ``(id, group, prediction, reference, unrelaxed input[, confidence])`` items: one for the
    model and one for the Dummy baseline (input as prediction) per structure. ``confidence`` is a dict
    such as :attr:`e3relax_fast.relax.RelaxResult.confidence` (``None`` or absent: unknown)."""
    rows = []
    for item in items:
        structure_id, group, pred, ref, unrelaxed = item[:5]
        confidence = dict(item[5] or {}) if len(item) > 5 else {}
        try:
            if ref is None:
                raise ValueError("no reference structure has this id")
            ref = _arrays(ref, "reference")
            pred = in_reference_order(_arrays(pred, "prediction"), ref)
            if not (np.isfinite(pred[0]).all() and np.isfinite(pred[2]).all()):
                raise ValueError("the prediction's field 'positions' or 'cell' is not finite (e3relax predict "
                                 "refuses such predictions); a non-finite prediction cannot be scored")
            ref_symmetry = reference_symmetry(ref) if symmetry else None
            rows.append(EvaluationRow(structure_id, "model", group,
                                      structure_metrics(pred, ref, symmetry, ref_symmetry), confidence))
            if unrelaxed is not None:
                unrelaxed = in_reference_order(_arrays(unrelaxed, "input"), ref)
                rows.append(EvaluationRow(structure_id, "dummy", group,
                                          structure_metrics(unrelaxed, ref, symmetry, ref_symmetry)))
        except ValueError as err:  # this structure's row says why; the evaluation carries on
            rows.append(EvaluationRow(structure_id, "model", group, {"error": f"structure {structure_id!r}: {err}"}))
    return rows


def rows_frame(rows: list[EvaluationRow]) -> pd.DataFrame:
    """One row per structure and method: ``id, method, group``, every metric, and the model's
    confidence entries (empty for the Dummy rows)."""
    records = [{"id": r.id, "method": r.method, "group": r.group, **r.metrics, **r.confidence} for r in rows]
    return pd.DataFrame.from_records(records, columns=None if records else ["id", "method", "group"])


def _statistics(values: pd.Series) -> dict[str, float]:
    finite = pd.to_numeric(values, errors="coerce").dropna()
    if finite.empty:
        return {"count": 0, "mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    return {"count": int(len(finite)), "mean": float(finite.mean()), "median": float(finite.median()),
            "p90": float(finite.quantile(0.9))}


def _summary_records(group: str, method: str, frame: pd.DataFrame) -> list[dict]:
    records = [{"group": group, "method": method, "metric": name, "unit": unit, **_statistics(frame[name])}
               for name, unit in SUMMARY_METRICS.items() if name in frame]
    def fraction(metric: str, share: float) -> dict:
        return {"group": group, "method": method, "metric": metric, "unit": "fraction", "count": int(len(frame)),
                "mean": float(share), "median": float("nan"), "p90": float("nan")}

    if "matched" in frame:
        records.append(fraction("matched", frame["matched"].mean()))
    if "expected_error" in frame and method == "model":
        ranked = frame[["expected_error", "coord_mae"]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(ranked) > 2:
            # how well the confidence ranks the error: Spearman = Pearson of the ranks
            rho = ranked["expected_error"].rank().corr(ranked["coord_mae"].rank())
            records.append({"group": group, "method": method, "metric": "expected_error spearman", "unit": "rank",
                            "count": int(len(ranked)), "mean": float(rho), "median": float("nan"),
                            "p90": float("nan")})
    for tag in SYMPRECS:
        if f"symmetry_{tag}" in frame:
            shares = frame[f"symmetry_{tag}"].value_counts(normalize=True)
            records += [fraction(f"symmetry {change} @{tag}", shares.get(change, 0.0)) for change in SYMMETRY_CHANGES]
    return records


def summarize(rows: list[EvaluationRow] | pd.DataFrame) -> pd.DataFrame:
    """Per (group, method, metric): ``count`` (finite values; structures for fractions), ``mean``,
    ``median``, ``p90`` (90th percentile), and the ``unit``; group ``"all"`` pools every group. RMSD
    statistics are over matched structures only (``matched`` says how many)."""
    frame = rows if isinstance(rows, pd.DataFrame) else rows_frame(rows)
    records: list[dict] = []
    groups = sorted(frame["group"].unique()) if len(frame) else []
    for group in (["all"] if len(groups) > 1 else []) + groups:
        subset = frame if group == "all" else frame[frame["group"] == group]
        for method in ("model", "dummy"):
            if (subset["method"] == method).any():
                records += _summary_records(group, method, subset[subset["method"] == method])
    return pd.DataFrame.from_records(records, columns=["group", "method", "metric", "unit", "count", "mean",
                                                       "median", "p90"])


def _group_title(group: str, table: pd.DataFrame) -> str:
    """``group: model N structures (U unmatched), dummy ...``."""
    parts = []
    for method in ("model", "dummy"):
        rows = table[table["method"] == method].set_index("metric")
        if rows.empty:
            continue
        count = int(rows["count"].max())
        text = f"{method} {count} structures"
        if "matched" in rows.index:
            text += f" ({round(count * (1 - rows.loc['matched', 'mean']))} unmatched by StructureMatcher)"
        parts.append(text)
    return f"{group}: " + ", ".join(parts)


def format_summary(summary: pd.DataFrame) -> str:
    """One table per group: a row per metric, model and Dummy side by side (mean, median, p90)."""
    blocks = []
    for group, table in summary.groupby("group", sort=False):
        stats = ["mean", "median", "p90"]
        parts = {m: t.set_index(["metric", "unit"])[stats] for m, t in table.groupby("method", sort=False)}
        wide = pd.concat({m: parts[m] for m in ("model", "dummy") if m in parts}, axis=1)
        blocks.append(_group_title(group, table) + "\n" + wide.to_string(float_format=lambda v: f"{v:.4g}", na_rep=""))
    blocks.append(f"StructureMatcher {MATCHER_TOLERANCES} (rmsd, max_dist: over matched structures, "
                  f"normalised by (V/n)^(1/3)); symmetry by spglib at symprec {', '.join(SYMPRECS)} Å: "
                  "kept = same space group, lowered/raised = fewer/more operations than the reference")
    return "\n\n".join(blocks)
