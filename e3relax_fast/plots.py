"""Figures of an evaluation (``e3relax evaluate --plot DIR``), one PNG per source group, and of a
training run's learning curve (``e3relax curve``, :func:`plot_learning_curve`).

Each figure has four panels, drawn from the per-structure table of :func:`e3relax_fast.metrics.rows_frame`:

1. predicted against reference volume per atom (Å³), model and Dummy, with the diagonal;
2. the same for the lattice lengths a, b, c (Å);
3. histograms of the coordinate error (Å) of model and Dummy on one axis, logarithmic bins;
4. the model's coordinate error against its confidence (``last_layer_max_move`` unless the table
   holds ``expected_error``), with Spearman's rank correlation; empty with a note when unknown.

An evaluation figure's panels are drawn on matplotlib's ``Figure`` directly (no pyplot, so no display backend is ever needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

#: Confidence columns the error panel plots, the first one present wins.
CONFIDENCE_COLUMNS = ("expected_error", "last_layer_max_move")
_STYLE = {"model": {"color": "tab:blue", "label": "model"}, "dummy": {"color": "tab:gray", "label": "Dummy (input)"}}


def _parity(ax, frame: pd.DataFrame, columns: list[str], unit: str, what: str) -> None:
    values = []
    for method in ("dummy", "model"):
        rows = frame[frame["method"] == method]
        if rows.empty:
            continue
        ref = np.concatenate([rows[f"{c}_ref"].to_numpy(float) for c in columns])
        pred = np.concatenate([rows[c].to_numpy(float) for c in columns])
        mae = np.nanmean(np.abs(pred - ref))
        ax.scatter(ref, pred, s=10, alpha=0.6, color=_STYLE[method]["color"],
                   label=f"{_STYLE[method]['label']}: MAE {mae:.3g} {unit}")
        values += [ref, pred]
    if values:
        low, high = np.nanmin(np.concatenate(values)), np.nanmax(np.concatenate(values))
        ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    ax.set_title(f"{what}: predicted against relaxed", fontsize=9)
    ax.set_xlabel(f"reference {what} ({unit})")
    ax.set_ylabel(f"predicted {what} ({unit})")
    ax.legend(fontsize=8)


def _error_histograms(ax, frame: pd.DataFrame) -> None:
    errors = {m: frame.loc[frame["method"] == m, "coord_mae"].to_numpy(float) for m in ("dummy", "model")}
    positive = np.concatenate([e[np.isfinite(e) & (e > 0)] for e in errors.values()])
    if positive.size == 0:
        ax.text(0.5, 0.5, "no nonzero errors", ha="center", transform=ax.transAxes)
        return
    count = int(np.clip(np.sqrt(positive.size), 6, 40))
    bins = np.geomspace(positive.min(), positive.max(), count + 1) if positive.min() < positive.max() else count
    for method, values in errors.items():
        values = values[np.isfinite(values)]
        if values.size:
            # Dummy filled, model as an outline on top: both stay readable where they overlap
            ax.hist(np.clip(values, positive.min(), None), bins=bins, color=_STYLE[method]["color"],
                    histtype="stepfilled" if method == "dummy" else "step", alpha=0.5 if method == "dummy" else 1.0,
                    linewidth=2, label=f"{_STYLE[method]['label']}: median {np.median(values):.3g} Å")
    if isinstance(bins, np.ndarray):
        ax.set_xscale("log")
    ax.set_title("coordinate error per structure", fontsize=9)
    ax.set_xlabel("coordinate MAE per structure (Å)")
    ax.set_ylabel("structures")
    ax.legend(fontsize=8)


def _error_against_confidence(ax, frame: pd.DataFrame) -> None:
    model = frame[frame["method"] == "model"]
    column = next((c for c in CONFIDENCE_COLUMNS if c in model and model[c].notna().any()), None)
    if column is None:
        ax.text(0.5, 0.5, "no confidence in the predictions\n(write them with e3relax predict)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    pairs = model[[column, "coord_mae"]].apply(pd.to_numeric, errors="coerce").dropna()
    rho = pairs[column].corr(pairs["coord_mae"], method="spearman") if len(pairs) > 2 else float("nan")
    ax.scatter(pairs[column], pairs["coord_mae"], s=10, alpha=0.6, color=_STYLE["model"]["color"])
    if (pairs > 0).all().all() and len(pairs) > 1:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"{column} (Å)")
    ax.set_ylabel("model coordinate MAE (Å)")
    ax.set_title(f"model error against its confidence: Spearman {rho:.2f} over {len(pairs)} structures",
                 fontsize=9)


def _title(set_name: str, group: str, frame: pd.DataFrame) -> str:
    model = frame[frame["method"] == "model"]
    title = f"{set_name}: {group}, {len(model)} structures"
    if "matched" in model and len(model):
        title += f" ({int((model['matched'] == 0).sum())} unmatched by StructureMatcher)"
    return title


def plot_group(frame: pd.DataFrame, path: Path, set_name: str, group: str) -> Path:
    """One figure for the rows of one group; returns ``path`` (a PNG)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 9), layout="constrained")
    axes = figure.subplots(2, 2)
    _parity(axes[0, 0], frame, ["volume_per_atom"], "Å³", "volume per atom")
    _parity(axes[0, 1], frame, ["a", "b", "c"], "Å", "lattice length")
    _error_histograms(axes[1, 0], frame)
    _error_against_confidence(axes[1, 1], frame)
    figure.suptitle(_title(set_name, group, frame))
    figure.savefig(path, dpi=110)
    return path


def plot_evaluation(frame: pd.DataFrame, out_dir: str | Path, set_name: str) -> list[Path]:
    """Write ``<group>.png`` for every group of the table (and ``all.png`` when there are several)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = sorted(frame["group"].unique())
    paths = []
    for group in (["all"] if len(groups) > 1 else []) + groups:
        rows = frame if group == "all" else frame[frame["group"] == group]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("._") or "group"
        paths.append(plot_group(rows, out / f"{name}.png", set_name, group))
    return paths


def plot_learning_curve(frame: pd.DataFrame, events: list[tuple[int, str]], path: str | Path,
                        x: str = "hours") -> Path:
    """A run's learning curve (a table of :func:`e3relax_fast.train.curve.curve_frame`) as a figure (PNG,
    SVG or PDF by ``path``'s suffix): each
    source's validation ratio (coordinate MAE over Dummy's; below 1 beats doing nothing) and
    ``val_score`` in black against ``x`` (``hours`` of training or ``step``), events as dotted lines
    (placed by step, at their validation's hours). Returns ``path``."""
    from matplotlib.figure import Figure

    if x not in ("hours", "step"):
        raise ValueError(f"x must be 'hours' or 'step', got {x!r}")
    if x == "hours" and frame["hours"].isna().any():
        raise ValueError("some validations have no hours (a run from before the trainer logged them): use x='step'")
    sources = [c for c in frame.columns if c not in ("step", "hours", "val_score")]
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    ax = figure.subplots()
    for source in sources:
        ax.plot(frame[x], frame[source], marker="o", markersize=3, linewidth=1.2, label=source)
    ax.plot(frame[x], frame["val_score"], color="black", linewidth=2.4, label="val_score (mean)")
    for step, event in events:
        where = float(np.interp(step, frame["step"], frame[x])) if x == "hours" else step
        ax.axvline(where, color="gray", linestyle=":", linewidth=1)
        ax.annotate(event, (where, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                    fontsize=7, color="gray")
    ax.set_xlabel("hours of training (wall clock)" if x == "hours" else "optimiser step")
    ax.set_ylabel("validation coordinate MAE / Dummy's")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    last = frame.iloc[-1]
    figure.suptitle(f"learning curve to step {int(last['step']):,}: val_score {last['val_score']:.3f}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return Path(path)
