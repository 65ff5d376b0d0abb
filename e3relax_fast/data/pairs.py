"""Sources of (unrelaxed, relaxed) training pairs, read as streams of :class:`PairRecord`.

Every reader yields one record per pair, in the source's order. A pair that cannot be read, or whose
two sides do not hold the same atoms in the same order, yields a record with ``error`` set and no
arrays: preprocessing records it and carries on.

Supported sources (:func:`read_pairs` picks one from the path):

- two extxyz files (unrelaxed, relaxed) with the same frames in the same order, aligned by
  ``info["id"]`` when present (a mismatch is an error naming both ids);
- a folder of ``<id>_unrelaxed.cif`` / ``<id>_relaxed.cif`` files, the research code's custom layout,
  with optional split CSVs (``train.csv``, ``val.csv``, ``test.csv``) whose ``id`` column (or first
  column) lists ids: the split of each pair is taken from them;
- an ASE database whose rows carry the keys ``pair_id`` and ``state`` (``"unrelaxed"``/``"relaxed"``);
- the Perov-5 CSV (``perov5``): see :func:`perov5_pairs`;
- JSON lines of pymatgen structure dicts (``.jsonl``, the output of ``shared/tools/make_pairs.py``).
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..io.structures import structure_id_of
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


def extxyz_pairs(unrelaxed_path: str | Path, relaxed_path: str | Path,
                 group_key: str = "prototype") -> Iterator[PairRecord]:
    """Pairs from two extxyz files with the same frames in the same order (streamed).

    Ids follow :func:`e3relax_fast.io.structures.structure_id_of` (``id``, ``structure_id``, ``mp_id``,
    ``material_id``, else ``<stem>:<frame>``); if both sides carry an ``id`` they must agree.
    The group is ``info[group_key]`` when present, else the reduced formula. A frame whose unrelaxed
    side carries ``info["path_step"]`` is an intermediate geometry of its pair's relaxation: kind
    :data:`PATH_KIND`, grouped with its pair by the same ``group_key`` (so it shares the pair's split).
    """
    from ase.io import iread

    unrelaxed_frames = iread(str(unrelaxed_path), index=":")
    relaxed_frames = iread(str(relaxed_path), index=":")
    stem = Path(unrelaxed_path).stem
    index = 0
    while True:
        u = next(unrelaxed_frames, None)
        r = next(relaxed_frames, None)
        if u is None and r is None:
            return
        if u is None or r is None:
            longer = relaxed_path if u is None else unrelaxed_path
            raise ValueError(f"{longer} has more frames than its partner (from frame {index} on): "
                             "the two files must hold the same pairs in the same order")
        pair_id = structure_id_of(u.info, f"{stem}:{index}")  # the one id rule (io/structures.py)
        if "id" in r.info and str(r.info["id"]) != pair_id:
            yield PairRecord(pair_id, error=f"pair {pair_id!r}: frame {index} of {relaxed_path} has id "
                                            f"{r.info['id']!r}; the files are not aligned")
        else:
            record = _make_record(pair_id, u, r, str(u.info.get(group_key, "")))
            if "path_step" in u.info:
                record.kind = PATH_KIND
            yield record
        index += 1


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
    from ase.io import read

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
        try:
            u, r = read(files["unrelaxed"]), read(files["relaxed"])
        except Exception as err:  # noqa: BLE001 - a broken CIF is recorded, not fatal
            yield PairRecord(pair_id, split=splits.get(pair_id, ""),
                             error=f"pair {pair_id!r}: cannot read its CIF files: {type(err).__name__}: {err}")
            continue
        yield _make_record(pair_id, u, r, split=splits.get(pair_id, ""))


def ase_db_pairs(path: str | Path) -> Iterator[PairRecord]:
    """Pairs from an ASE database: rows with keys ``pair_id`` and ``state`` (unrelaxed/relaxed);
    an optional ``group`` key (e.g. the prototype) keeps pairs together in splits."""
    from ase.db import connect

    if not os.path.exists(path):
        raise FileNotFoundError(f"ASE database {str(path)!r} does not exist")
    sides: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    groups: dict[str, str] = {}
    for row in connect(str(path)).select():
        pair_id = str(row.get("pair_id", ""))
        state = row.get("state", "")
        if not pair_id or state not in ("unrelaxed", "relaxed"):
            raise ValueError(f"{path}: row {row.id} needs keys pair_id and state=unrelaxed|relaxed")
        if pair_id not in sides:
            order.append(pair_id)
        sides.setdefault(pair_id, {})[state] = row.toatoms()
        groups[pair_id] = str(row.get("group", groups.get(pair_id, "")))
    for pair_id in order:
        found = sides[pair_id]
        if len(found) != 2:
            missing = "relaxed" if "relaxed" not in found else "unrelaxed"
            yield PairRecord(pair_id, error=f"pair {pair_id!r}: the database has no {missing} row")
            continue
        yield _make_record(pair_id, found["unrelaxed"], found["relaxed"], groups[pair_id])


def jsonl_pairs(path: str | Path, group_key: str = "prototype") -> Iterator[PairRecord]:
    """Pairs from JSON lines with ``id``, ``unrelaxed`` and ``relaxed`` (pymatgen ``Structure.as_dict()``),
    as written by ``shared/tools/make_pairs.py``; ``group_key`` names the group (plain JSON, no pickle)."""
    import json

    from pymatgen.core import Structure

    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            pair_id = f"{Path(path).stem}:{number}"
            try:
                row = json.loads(line)
                pair_id = str(row.get("id", pair_id))
                unrelaxed, relaxed = Structure.from_dict(row["unrelaxed"]), Structure.from_dict(row["relaxed"])
            except Exception as err:  # noqa: BLE001 - one bad line is recorded, not fatal
                yield PairRecord(pair_id, error=f"pair {pair_id!r} (line {number} of {path}): "
                                                f"{type(err).__name__}: {err}")
                continue
            yield _make_record(pair_id, unrelaxed, relaxed, str(row.get(group_key, "")))


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
    from pymatgen.core import Structure

    csv.field_size_limit(1 << 24)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            pair_id = f"perov5-{row.get('material_id', '').strip()}"
            try:
                with warnings.catch_warnings():  # pymatgen notes each rounded coordinate; expected here
                    warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF")
                    structure = Structure.from_str(row["cif"], fmt="cif")
                relaxed = structure_arrays(structure, f"pair {pair_id!r}")
            except Exception as err:  # noqa: BLE001 - one broken CIF is recorded, not fatal
                yield PairRecord(pair_id, error=f"pair {pair_id!r}: cannot read field 'cif': "
                                                f"{type(err).__name__}: {err}")
                continue
            unrelaxed = perov5_ideal(relaxed, lattice_constant)
            yield PairRecord(pair_id, unrelaxed, relaxed, _reduced_formula(relaxed[1]))


def labelled(records: Iterator[PairRecord], label: str) -> Iterator[PairRecord]:
    for record in records:
        record.source = label
        yield record


def read_pairs(source: str | Path, relaxed: str | Path | None = None) -> Iterator[PairRecord]:
    """Pairs from any supported source: ``read_pairs(unrelaxed.extxyz, relaxed.extxyz)``, a CIF folder,
    an ASE ``.db``, a Perov-5 CSV (``.csv``) or JSON lines (``.jsonl``)."""
    label = f"{source} {relaxed}" if relaxed is not None else str(source)
    source = Path(source)
    for path in (source, relaxed):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"pair source {str(path)!r} does not exist")
    if relaxed is not None:
        return labelled(extxyz_pairs(source, relaxed), label)
    if source.is_dir():
        return labelled(cif_folder_pairs(source), label)
    if source.suffix == ".db":
        return labelled(ase_db_pairs(source), label)
    if source.suffix == ".csv":
        return labelled(perov5_pairs(source), label)
    if source.suffix == ".jsonl":
        return labelled(jsonl_pairs(source), label)
    raise ValueError(f"pair source {str(source)!r}: give two extxyz files (unrelaxed, relaxed), a folder of "
                     "<id>_unrelaxed.cif/<id>_relaxed.cif, an ASE .db, a Perov-5 .csv or a .jsonl")
