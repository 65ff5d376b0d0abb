"""Sources of (unrelaxed, relaxed) training pairs, read as streams of :class:`PairRecord`.

Every reader yields one record per pair, in the source's order. A pair that cannot be read, or whose
two sides do not hold the same atoms in the same order, yields a record with ``error`` set and no
arrays: preprocessing records it and carries on. The structures themselves are read by
``e3relax_fast/io/structures.py`` (its id and group rules); this module only pairs them.

The kinds of source are the table :data:`PAIR_SOURCES` (how each is given and recognised, how it pairs
frames), which ``e3relax preprocess --help``, the error for an unknown source and docs/training.md
(checked by tests/data/test_pairs.py) all read.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..io.structures import group_of, read_file, structure_from_dict
from .convert import structure_arrays

#: (pos [n,3] Å, z [n], cell [3,3] Å rows, pbc [3]) of one structure.
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: Edge of the Perov-5 unrelaxed cubic cell, Å (the issue's convention for the ideal structure).
PEROV5_IDEAL_LATTICE_CONSTANT = 4.0


#: ``PairRecord.kind`` (and the store's ``pairs.csv`` column) of a pair made by perturbation.
PERTURBATION_KIND = "perturbation"

#: ``PairRecord.kind`` of a pair whose input is an intermediate geometry of a relaxation (a frame of its
#: path, recognised by ``info["path_step"]``), beside the same relaxed target as the true pair: an
#: easier, extra training input. Validation leaves these out (e3relax_fast/train/trainer.py).
PATH_KIND = "path"


@dataclass
class PairRecord:
    """One training pair, or why it is missing.

    ``group`` is what splits keep together (prototype, or reduced formula when the source names none);
    ``split`` is a split named by the source itself (split CSVs), else empty.
    """

    id: str
    unrelaxed: Arrays | None = None
    relaxed: Arrays | None = None
    group: str = ""
    split: str = ""
    error: str = ""
    source: str = ""
    kind: str = "pair"  # PERTURBATION_KIND: made from a relaxed structure; PATH_KIND: a relaxation frame

    @property
    def ok(self) -> bool:
        return not self.error


def check_pair(pair_id: str, unrelaxed: Arrays, relaxed: Arrays) -> None:
    """Raise ``ValueError`` naming the pair and the field unless both sides hold the same atoms in
    the same order under the same periodicity."""
    if len(unrelaxed[1]) != len(relaxed[1]):
        raise ValueError(f"pair {pair_id!r}: field 'numbers' has {len(unrelaxed[1])} atoms unrelaxed but "
                         f"{len(relaxed[1])} relaxed")
    differ = np.nonzero(unrelaxed[1] != relaxed[1])[0]
    if differ.size:
        k = int(differ[0])
        raise ValueError(f"pair {pair_id!r}: field 'numbers' differs at atom {k} (Z={int(unrelaxed[1][k])} "
                         f"unrelaxed, Z={int(relaxed[1][k])} relaxed): atom order must match within a pair")
    if not np.array_equal(unrelaxed[3], relaxed[3]):
        raise ValueError(f"pair {pair_id!r}: field 'pbc' differs between the unrelaxed and relaxed sides")


def _reduced_formula(numbers: np.ndarray) -> str:
    from pymatgen.core import Composition, Element

    values, counts = np.unique(numbers, return_counts=True)
    return Composition({Element.from_Z(int(z)): int(c) for z, c in zip(values, counts)}).reduced_formula


def _make_record(pair_id: str, unrelaxed: Any, relaxed: Any, group: str = "", split: str = "") -> PairRecord:
    try:
        u = structure_arrays(unrelaxed, f"pair {pair_id!r} (unrelaxed)")
        r = structure_arrays(relaxed, f"pair {pair_id!r} (relaxed)")
        check_pair(pair_id, u, r)
        return PairRecord(pair_id, u, r, group or _reduced_formula(u[1]), split)
    except (ValueError, TypeError, KeyError) as err:
        return PairRecord(pair_id, group=group, split=split, error=str(err))


def extxyz_pairs(unrelaxed_path: str | Path, relaxed_path: str | Path) -> Iterator[PairRecord]:
    """Pairs from two structure files with the same frames in the same order (streamed).

    The id and group are the unrelaxed frame's (``e3relax_fast/io/structures.py``; the group falls back
    to the reduced formula); if the relaxed frame names an ``id`` too, they must agree. A frame whose
    unrelaxed side carries ``info["path_step"]`` is an intermediate geometry of its pair's relaxation:
    kind :data:`PATH_KIND`, grouped with its pair by the same prototype (so it shares the pair's split).
    """
    unrelaxed, relaxed = read_file(str(unrelaxed_path)), read_file(str(relaxed_path))
    for index, (u, r) in enumerate(itertools.zip_longest(unrelaxed, relaxed)):
        if u is None or r is None:
            shorter = u or r
            longer = relaxed_path if u is None else unrelaxed_path
            raise ValueError(shorter.error if shorter is not None and shorter.error else
                             f"{longer} has more frames than its partner (from frame {index} on): "
                             "the two files must hold the same pairs in the same order")
        if u.structure is None or r.structure is None:
            yield PairRecord(u.id, group=u.group, error=u.error or r.error)
        elif "id" in r.info and str(r.info["id"]) != u.id:
            yield PairRecord(u.id, error=f"pair {u.id!r}: frame {index} of {relaxed_path} has id "
                                         f"{r.info['id']!r}; the files are not aligned")
        else:
            record = _make_record(u.id, u.structure, r.structure, u.group)
            if "path_step" in u.info:
                record.kind = PATH_KIND
            yield record


def _read_split_csvs(folder: Path) -> dict[str, str]:
    splits: dict[str, str] = {}
    for name in ("train", "val", "test"):
        path = folder / f"{name}.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            continue
        header = [h.strip().lower() for h in rows[0]]
        column = next((header.index(k) for k in ("id", "cif_id", "material_id") if k in header), None)
        body = rows[1:] if column is not None else rows
        for row in body:
            if row:
                splits[row[column or 0].strip()] = name
    return splits


def cif_folder_pairs(folder: str | Path) -> Iterator[PairRecord]:
    """Pairs from ``<id>_unrelaxed.cif`` / ``<id>_relaxed.cif`` files (sorted by id).

    Split CSVs in the folder (``train.csv``/``val.csv``/``test.csv``) assign each id its split; an id
    with only one side is an error record.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pair folder {str(folder)!r} does not exist")
    sides: dict[str, dict[str, Path]] = {}
    for path in folder.iterdir():
        for side in ("unrelaxed", "relaxed"):
            suffix = f"_{side}.cif"
            if path.name.endswith(suffix):
                sides.setdefault(path.name[: -len(suffix)], {})[side] = path
                break
    splits = _read_split_csvs(folder)
    for pair_id in sorted(sides):
        files = sides[pair_id]
        missing = [s for s in ("unrelaxed", "relaxed") if s not in files]
        if missing:
            yield PairRecord(pair_id, split=splits.get(pair_id, ""),
                             error=f"pair {pair_id!r}: no {pair_id}_{missing[0]}.cif in {folder}")
            continue
        u, r = (next(read_file(str(files[side]))) for side in ("unrelaxed", "relaxed"))
        if u.structure is None or r.structure is None:
            yield PairRecord(pair_id, split=splits.get(pair_id, ""),
                             error=f"pair {pair_id!r}: cannot read its CIF files: {u.error or r.error}")
            continue
        yield _make_record(pair_id, u.structure, r.structure, split=splits.get(pair_id, ""))


def ase_db_pairs(path: str | Path) -> Iterator[PairRecord]:
    """Pairs from an ASE database: rows with keys ``pair_id`` and ``state`` (unrelaxed/relaxed);
    an optional ``group`` key (e.g. the prototype) keeps pairs together in splits."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"ASE database {str(path)!r} does not exist")
    sides: dict[str, dict[str, Any]] = {}
    groups: dict[str, str] = {}
    for row in read_file(str(path)):
        pair_id, state = str(row.info.get("pair_id", "")), row.info.get("state", "")
        if not pair_id or state not in ("unrelaxed", "relaxed"):
            raise ValueError(row.error or f"{path}: row {row.id} needs keys pair_id and state=unrelaxed|relaxed")
        sides.setdefault(pair_id, {})[state] = row
        groups[pair_id] = row.group or groups.get(pair_id, "")
    for pair_id, found in sides.items():  # in the order of each pair's first row
        if len(found) != 2:
            missing = "relaxed" if "relaxed" not in found else "unrelaxed"
            yield PairRecord(pair_id, error=f"pair {pair_id!r}: the database has no {missing} row")
        elif found["unrelaxed"].structure is None or found["relaxed"].structure is None:
            yield PairRecord(pair_id, group=groups[pair_id],
                             error=found["unrelaxed"].error or found["relaxed"].error)
        else:
            yield _make_record(pair_id, found["unrelaxed"].structure, found["relaxed"].structure, groups[pair_id])


def jsonl_pairs(path: str | Path) -> Iterator[PairRecord]:
    """Pairs from JSON lines with ``id``, ``unrelaxed`` and ``relaxed`` (pymatgen ``Structure.as_dict()``),
    as written by ``shared/tools/make_pairs.py`` and ``make_mp_pairs.py``; the group by
    ``e3relax_fast/io/structures.py``'s group keys of the line (plain JSON, no pickle). A line's ``path``
    (the generators' ``--frames``: ``[{step, positions, cell}]``, Å) adds one :data:`PATH_KIND` pair per
    frame after its pair, id ``<id>-s<step>`` as in ``shared/data/*/path/``, same group and target."""
    import json

    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            pair_id = f"{Path(path).stem}:{number}"
            try:
                row = json.loads(line)
                pair_id = str(row.get("id", pair_id))
                unrelaxed, relaxed = structure_from_dict(row["unrelaxed"]), structure_from_dict(row["relaxed"])
            except Exception as err:  # noqa: BLE001 - one bad line is recorded, not fatal
                yield PairRecord(pair_id, error=f"pair {pair_id!r} (line {number} of {path}): "
                                                f"{type(err).__name__}: {err}")
                continue
            record = _make_record(pair_id, unrelaxed, relaxed, group_of(row))
            yield record
            if record.ok:
                yield from _path_frames(record, row.get("path") or [], f"line {number} of {path}")


def _path_frames(pair: PairRecord, frames: list, where: str) -> Iterator[PairRecord]:
    """The relaxation-path frames of a JSON-lines pair as :data:`PATH_KIND` pairs (see :func:`jsonl_pairs`)."""
    _, z, _, pbc = pair.unrelaxed
    for frame in frames:
        frame_id = f"{pair.id}-s{frame.get('step', '?')}"
        try:
            pos = np.asarray(frame["positions"], dtype=np.float64)
            cell = np.asarray(frame["cell"], dtype=np.float64)
            if pos.shape != (len(z), 3) or cell.shape != (3, 3):
                raise ValueError(f"positions {pos.shape} and cell {cell.shape}, expected ({len(z)}, 3) and (3, 3)")
            if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
                raise ValueError("positions or cell hold a value that is not finite")
            record = PairRecord(frame_id, (pos, z.copy(), cell, pbc.copy()), pair.relaxed, pair.group, pair.split)
        except (KeyError, TypeError, ValueError) as err:
            record = PairRecord(frame_id, group=pair.group, error=f"path frame {frame_id!r} ({where}): {err}")
        record.kind = PATH_KIND
        yield record


def perov5_ideal(relaxed: Arrays, lattice_constant: float = PEROV5_IDEAL_LATTICE_CONSTANT) -> Arrays:
    """The Perov-5 unrelaxed side of a relaxed perovskite: the same species in the same order, each
    fractional coordinate rounded to the nearest of 0 and 1/2 (modulo 1), in a cubic cell of edge
    ``lattice_constant`` Å. Deterministic; depends on nothing but the relaxed structure."""
    pos, z, cell, pbc = relaxed
    frac = np.linalg.solve(cell.T, pos.T).T % 1.0
    ideal = (np.round(frac * 2.0) / 2.0) % 1.0
    ideal_cell = np.eye(3) * lattice_constant
    return ideal @ ideal_cell, z.copy(), ideal_cell, np.ones(3, dtype=bool)


def perov5_pairs(csv_path: str | Path, lattice_constant: float = PEROV5_IDEAL_LATTICE_CONSTANT
                 ) -> Iterator[PairRecord]:
    """Perov-5 pairs from the CDVAE CSV (``material_id``, ``cif`` columns): (ideal cubic, DFT relaxed).

    The relaxed side is the CIF as given; the unrelaxed side is :func:`perov5_ideal` of it. The group
    is the reduced formula, so one composition never sits in two splits.
    """
    for row in read_file(str(csv_path)):
        pair_id = f"perov5-{row.info.get('material_id', row.id)}"
        if row.structure is None:
            yield PairRecord(pair_id, error=f"pair {pair_id!r}: {row.error}")
            continue
        try:
            relaxed = structure_arrays(row.structure, f"pair {pair_id!r}")
        except (ValueError, TypeError) as err:
            yield PairRecord(pair_id, error=str(err))
            continue
        yield PairRecord(pair_id, perov5_ideal(relaxed, lattice_constant), relaxed, _reduced_formula(relaxed[1]))


def labelled(records: Iterator[PairRecord], label: str) -> Iterator[PairRecord]:
    for record in records:
        record.source = label
        yield record


@dataclass(frozen=True)
class PairSource:
    """One kind of pair source: how a user gives it (``given``, for ``--help``, errors and the docs),
    how it is recognised from the path(s), and the reader that pairs its frames."""

    kind: str
    given: str
    recognises: Callable[[Path, Path | None], bool]
    read: Callable[..., Iterator[PairRecord]]


#: Every kind of pair source, in the order they are tried.
PAIR_SOURCES = (
    PairSource("two files", "UNRELAXED.extxyz RELAXED.extxyz (any two structure files with the same frames in "
               "the same order; frames with info path_step are path frames)",
               lambda source, relaxed: relaxed is not None, extxyz_pairs),
    PairSource("CIF folder", "a folder of <id>_unrelaxed.cif / <id>_relaxed.cif (optional train/val/test.csv "
               "listing ids)", lambda source, relaxed: source.is_dir(), cif_folder_pairs),
    PairSource("ASE database", "an ASE .db whose rows carry pair_id and state=unrelaxed|relaxed (optional group)",
               lambda source, relaxed: source.suffix == ".db", ase_db_pairs),
    PairSource("Perov-5 table", "a Perov-5 .csv (material_id, cif): ideal cubic input, DFT relaxed target",
               lambda source, relaxed: source.suffix == ".csv", perov5_pairs),
    PairSource("JSON lines", "a .jsonl of {id, unrelaxed, relaxed, path?} pymatgen dicts (shared/tools generators; "
               "path: relaxation frames)",
               lambda source, relaxed: source.suffix == ".jsonl", jsonl_pairs),
)


def pair_sources_help() -> str:
    """The kinds of pair source in one sentence, for ``--help`` and errors."""
    return "; ".join(source.given for source in PAIR_SOURCES)


def pair_sources_table() -> str:
    """The kinds of pair source as a Markdown table (docs/training.md holds it verbatim)."""
    rows = [f"| {source.kind} | {source.given} |" for source in PAIR_SOURCES]
    return "\n".join(["| source | given as |", "|---|---|", *rows])


def read_pairs(source: str | Path, relaxed: str | Path | None = None) -> Iterator[PairRecord]:
    """Pairs from any source of :data:`PAIR_SOURCES`: ``read_pairs(unrelaxed, relaxed)`` for two files,
    ``read_pairs(path)`` for the others."""
    label = f"{source} {relaxed}" if relaxed is not None else str(source)
    for path in (source, relaxed):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"pair source {str(path)!r} does not exist")
    source, relaxed = Path(source), (Path(relaxed) if relaxed is not None else None)
    for kind in PAIR_SOURCES:
        if kind.recognises(source, relaxed):
            return labelled(kind.read(source, relaxed) if relaxed is not None else kind.read(source), label)
    raise ValueError(f"pair source {str(source)!r} is none of the kinds read: {pair_sources_help()}")
