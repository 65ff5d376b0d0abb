"""Reading structures as streams, one record per structure: the one way in for every command.

``predict``, ``evaluate``, ``merge`` and ``preprocess`` (``--structures`` and every pair source in
``e3relax_fast/data/pairs.py``) turn paths into :class:`StructureRecord` here, so a structure has the
same id wherever it is read. Formats: CIF, POSCAR/CONTCAR/.vasp, extxyz/xyz, ASE .traj and .db, JSON
(a pymatgen ``Structure.as_dict()``, else ASE's JSON database) and CSV files with a ``cif`` column (one
structure per row, the other columns its ``info``); folders and globs of them.

**The id rule.** The first of the ``info`` keys :data:`ID_KEYS` present (extxyz comment keys, an ASE db
row's key-value pairs, a CSV row's columns) is the id; else ``<stem>`` when the file holds one structure,
``<stem>:<frame>`` when it holds several (``<stem>:<row id>`` in an ASE db).

Reading never raises for one bad file or frame: each record carries either the structure or the error,
so a batch job records the failure and carries on.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

#: Extensions read as structure files when a folder is given.
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".traj", ".json", ".db", ".csv")
_STRUCTURE_NAMES = ("POSCAR", "CONTCAR")


@dataclass
class StructureRecord:
    """One input structure: its id, where it came from, and the structure (ASE ``Atoms``) or the reason
    it is missing. ``info`` is what the file says about it (also when it could not be read: an ASE db
    row's keys, a CSV row's columns); ``group`` is what a data split keeps together (:func:`group_of`)."""

    id: str
    source: str
    structure: Any = None
    error: str = ""
    order: str = ""  # "<file>:<frame>": its place in the whole input, set by predict for merge
    info: dict = field(default_factory=dict)
    group: str = ""


def clean_id(text: str) -> str:
    """An id safe in every output: control characters (a newline in a file name would split an extxyz
    header) become ``_``."""
    return re.sub(r"[\x00-\x1f\x7f]", "_", str(text))


#: Keys whose value names a structure, in the order they are looked up in ``info`` (extxyz, ASE db key-
#: value pairs, ...): the first present is the id, else ``<stem>`` (one structure in the file) or
#: ``<stem>:<frame>`` (several; ``<stem>:<row id>`` in a db). ``structure_id`` is what a .db output writes.
ID_KEYS = ("id", "structure_id", "mp_id", "material_id")


def structure_id_of(info: dict, default: str) -> str:
    """The id of a structure from its ``info`` by :data:`ID_KEYS`, else ``default``."""
    given = next((info[key] for key in ID_KEYS if info.get(key) not in (None, "")), None)
    return str(given) if given is not None else default


#: Keys whose value names what a data split must keep together (a pair's prototype, the MP entry a
#: structure came from), in the order they are looked up; empty when none is present.
GROUP_KEYS = ("group", "prototype", "mp_id")


def group_of(info: dict) -> str:
    """The group of a structure from its ``info`` by :data:`GROUP_KEYS`, else ``""``."""
    return str(next((info[key] for key in GROUP_KEYS if info.get(key) not in (None, "")), ""))


def site_problem(atoms: Any) -> str:
    """Why the sites of an ASE reading are not one element each, or empty: atomic numbers outside
    1-118 (no element), or partial occupancies. ASE's CIF reader keeps
    ``info["occupancy"]`` while placing one species per site: a site shared by several species
    summing to at most 1 is a partial occupancy; summing to more, two atoms the file puts on one
    position, which the reader merged into one."""
    numbers = np.asarray(atoms.numbers)
    outside = sorted({int(z) for z in numbers[(numbers < 1) | (numbers > 118)]})
    if outside:  # before anything asks for a symbol: Z = -3 would name 'Lv', Z = 119 none at all
        return f"field 'numbers' holds {', '.join(map(str, outside))}, not a known element (atomic numbers are 1-118)"
    for site, species in (atoms.info.get("occupancy") or {}).items():
        listed = ", ".join(f"{e} {o:g}" for e, o in species.items())
        if sum(species.values()) > 1 + 1e-6:
            return (f"field 'positions' puts several atoms on site {site} ({listed}): coincident sites, "
                    "which the CIF reader merged into one")
        if sum(species.values()) < 1 - 1e-6 or len(species) > 1:
            return f"field 'occupancy' is partial (site {site}: {listed}); E3Relax needs one element per site"
    return ""


def _is_structure_file(path: str) -> bool:
    """Whether a folder's file is read as structures: by its name, and a ``.csv`` only when its header
    names a ``cif`` column (a folder also holds reports and other tables)."""
    name = os.path.basename(path)
    if name.lower().endswith(".csv"):
        try:
            with open(path, newline="") as handle:
                return _cif_column(next(csv.reader(handle), [])) is not None
        except (OSError, UnicodeDecodeError, csv.Error):
            return False
    return name.lower().endswith(STRUCTURE_SUFFIXES) or name.startswith(_STRUCTURE_NAMES)


def _cif_column(names: Sequence[str]) -> str | None:
    """The (stripped) name of a table's CIF column, ``cif`` in any case, or None."""
    return next((name.strip() for name in names if name.strip().lower() == "cif"), None)


def _folder_files(folder: str, recursive: bool) -> list[str]:
    """The structure files of a folder (sorted; with ``recursive``, of its subfolders too, links to
    folders not followed, so a link loop cannot recur). A link that leads nowhere (broken, or a loop) is
    listed like a file, so that it becomes an error row, as it does when a glob names it."""
    paths = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if os.path.isdir(full):
            if recursive and not os.path.islink(full):
                paths.extend(_folder_files(full, recursive))
        elif (os.path.isfile(full) or os.path.islink(full)) and _is_structure_file(full):
            paths.append(full)
    return paths


def expand_inputs(inputs: Sequence[str], recursive: bool = False) -> list[str]:
    """Files, globs and folders (their structure files, sorted; subfolders with ``recursive``) to a
    list of file paths."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(_folder_files(item, recursive))
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            paths.extend(matches)
        elif os.path.lexists(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} does not exist")
    return paths


def read_structures(inputs: Sequence[str], recursive: bool = False) -> Iterator[StructureRecord]:
    """Stream the structures of files, globs and folders (subfolders with ``recursive``) as records of
    ASE ``Atoms``, ids by the module's id rule. A file that cannot be read yields one record with the
    error and no structure; one that breaks part-way, its frames and then one such record."""
    for path in expand_inputs(inputs, recursive):
        yield from read_file(path)


@dataclass
class _BadFrame:
    """A frame of a file that holds several, unreadable on its own (a CSV row whose CIF does not parse):
    it becomes an error record and the file goes on."""

    info: dict
    error: str


def read_file(path: str) -> Iterator[StructureRecord]:
    """The records of one file, streamed: a file of many frames is never held whole. A file that cannot
    be opened is one error record; one that breaks after some frames, an error record for the rest."""
    stem = Path(path).stem
    try:
        if os.path.islink(path) and not os.path.exists(path):
            raise ValueError("the link leads to no file (broken, or a loop of links)")
        if os.path.getsize(path) == 0:
            raise ValueError("the file is empty")
        frames = _read_frames(path)
        held = next(frames, None)
        if held is None:
            raise ValueError("the file holds no structure")
    except Exception as err:  # noqa: BLE001 - any parser failure is recorded, not fatal
        yield StructureRecord(clean_id(stem), path, None, f"cannot read {path}: {type(err).__name__}: {err}")
        return
    count = 0
    while True:  # one frame ahead: a file of one structure names it by its stem alone
        try:
            following = next(frames, None)
        except Exception as err:  # noqa: BLE001 - a broken frame ends the file, not the run
            yield _frame_record(held, path, f"{stem}:{count}")
            yield StructureRecord(clean_id(f"{stem}:{count + 1}"), path, None,
                                  f"cannot read {path} from frame {count + 1} on: {type(err).__name__}: {err}")
            return
        yield _frame_record(held, path, stem if count == 0 and following is None else f"{stem}:{count}")
        if following is None:
            return
        held, count = following, count + 1


def _frame_record(frame: Any, path: str, default_id: str) -> StructureRecord:
    structure_id = clean_id(structure_id_of(frame.info, default_id))
    group = group_of(frame.info)
    problem = frame.error if isinstance(frame, _BadFrame) else site_problem(frame)
    if problem:
        return StructureRecord(structure_id, path, None, f"structure {structure_id!r} ({path}): {problem}",
                               info=frame.info, group=group)
    return StructureRecord(structure_id, path, frame, info=frame.info, group=group)


def _read_frames(path: str) -> Iterator[Any]:
    """Every structure of one file as ASE Atoms (or a :class:`_BadFrame`), streamed."""
    from ase.io import iread

    suffix = Path(path).suffix.lower()
    if suffix == ".db":
        yield from _database_frames(path)
        return
    if suffix == ".csv":
        yield from _csv_frames(path)
        return
    if suffix == ".json":
        with open(path) as handle:
            data = json.load(handle)
        if isinstance(data, dict) and "lattice" in data and "sites" in data:  # pymatgen Structure.as_dict()
            yield structure_from_dict(data)
            return
    yield from iread(path, index=":")


def _database_frames(path: str) -> Iterator[Any]:
    """The rows of an ASE database, their key-value pairs in ``info`` (the id: ``<stem>:<row id>`` when
    the keys name none)."""
    from ase.db import connect

    for row in connect(path, use_lock_file=False).select():
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        atoms.info["id"] = structure_id_of(row.key_value_pairs, f"{Path(path).stem}:{row.id}")
        yield atoms


def _csv_frames(path: str) -> Iterator[Any]:
    """The rows of a CSV file with a ``cif`` column (the Perov-5 and CDVAE tables): each CIF as Atoms,
    the row's other columns in ``info``; a CIF that does not parse is a :class:`_BadFrame`."""
    csv.field_size_limit(1 << 24)  # one CIF per cell: larger than the default field limit
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        column = _cif_column(reader.fieldnames or [])
        if column is None:
            raise ValueError(f"field 'cif' is missing: a CSV of structures needs a 'cif' column "
                             f"(columns: {', '.join(reader.fieldnames or [])})")
        for row in reader:
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
            text = row.pop(column)
            try:
                atoms = structure_from_cif_text(text)
            except Exception as err:  # noqa: BLE001 - one broken CIF is recorded, not fatal
                yield _BadFrame(row, f"cannot read field 'cif': {type(err).__name__}: {err}")
                continue
            atoms.info.update(row)
            yield atoms


def structure_from_dict(data: dict) -> Any:
    """A pymatgen ``Structure.as_dict()`` as ASE Atoms (periodic); a disordered structure is a
    ``ValueError``."""
    from pymatgen.core import Structure

    return _atoms_of(Structure.from_dict(data))


def structure_from_cif_text(text: str) -> Any:
    """The first structure of a CIF given as text, as ASE Atoms. Parsed by pymatgen, which rounds
    coordinates a CIF gives to few digits (the Perov-5 tables) onto their special positions."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():  # pymatgen notes each rounded coordinate; expected here
        warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF")
        return _atoms_of(Structure.from_str(text, fmt="cif"))


def _atoms_of(structure: Any) -> Any:
    from ase import Atoms

    if not structure.is_ordered:
        raise ValueError("field 'species' is disordered (partial occupancies); E3Relax needs one element per site")
    return Atoms(numbers=[site.specie.Z for site in structure], positions=structure.cart_coords,
                 cell=structure.lattice.matrix, pbc=True)
