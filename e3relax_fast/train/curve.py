"""A training run's learning curve: its validations as a table, from a run folder or a run snapshot.

The trainer appends a line to ``<run.dir>/metrics.jsonl`` at every validation (``step``, ``hours``,
``val_ratio/<source>``: the EMA model's coordinate MAE over Dummy's per source, ``val_score``: their
mean) and at every event (a resume on new data, a continuation from a snapshot); a snapshot
(``e3relax_fast/train/snapshot.py``) carries those lines in its metadata. ``e3relax curve`` draws and
tabulates them (``e3relax_fast/cli/curve.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: the column prefix of a source's validation ratio in the trainer's records
RATIO_PREFIX = "val_ratio/"


def run_log_curve(run_dir: str | Path) -> list[dict]:
    """The validation lines and events of ``run_dir/metrics.jsonl``, in order (the per-step loss lines
    are left out: they are most of the log and no learning curve needs them); [] without a log. An
    unfinished last line (being appended, or cut by a kill) is left out; a broken line before it is a
    ``ValueError`` naming the file and line."""
    log = Path(run_dir) / "metrics.jsonl"
    if not log.exists():
        return []
    text = log.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # the line the trainer is appending right now (or was, when it was killed)
            raise ValueError(f"{log}: line {number} is not JSON ({err.msg})") from None
        if "val_score" in record or "event" in record:
            records.append(record)
    return records


def read_curve(source: str | Path) -> list[dict]:
    """The curve records of a run folder (its ``metrics.jsonl``) or of a snapshot file (its
    ``run_snapshot.curve``). ``FileNotFoundError`` for a missing path or a folder with no log,
    ``ValueError`` for a file that is not a snapshot."""
    path = Path(source)
    if path.is_dir():
        if not (path / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{path}: no metrics.jsonl: not a training run folder")
        return run_log_curve(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or snapshot")
    from .snapshot import read_run_snapshot  # a checkpoint is read only when one is given

    _, metadata = read_run_snapshot(path)
    return list(metadata["run_snapshot"].get("curve", []))


def curve_frame(records: list[dict]) -> pd.DataFrame:
    """One row per validation, in step order: ``step``, ``hours`` (NaN where a record has none), one
    column per source's ratio (named by the source) and ``val_score``. ``ValueError`` when no record
    is a validation."""
    rows = [record for record in records if "val_score" in record]
    if not rows:
        raise ValueError("the run has no validation yet (the trainer validates every run.steps_per_epoch steps)")
    frame = pd.DataFrame(rows)
    sources = sorted(c[len(RATIO_PREFIX):] for c in frame.columns if c.startswith(RATIO_PREFIX))
    out = pd.DataFrame({"step": frame["step"].astype(int),
                        "hours": frame["hours"] if "hours" in frame else float("nan")})
    for source in sources:
        out[source] = frame[RATIO_PREFIX + source]
    out["val_score"] = frame["val_score"]
    return out.sort_values("step", kind="stable").reset_index(drop=True)


def curve_events(records: list[dict]) -> list[tuple[int, str]]:
    """``(step, event)`` of every event record (``new data``, ``continued from snapshot``)."""
    return [(int(record.get("step", 0)), str(record["event"])) for record in records if "event" in record]


def markdown_table(frame: pd.DataFrame) -> str:
    """The curve as a Markdown table: step, hours (one decimal), each source's ratio and ``val_score``
    (three decimals; empty cells where a source was not yet validated)."""
    names = [c for c in frame.columns if c not in ("step", "hours")]
    lines = ["| step | hours | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for row in frame.to_dict("records"):
        hours = "" if pd.isna(row["hours"]) else f"{row['hours']:.1f}"
        cells = ["" if pd.isna(row[name]) else f"{row[name]:.3f}" for name in names]
        lines.append(f"| {int(row['step']):,} | {hours} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
