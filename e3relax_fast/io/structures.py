"""Reading and writing structure files as streams, one record per structure.

Reading never raises for one bad file: each record carries either the structure or the error, so a
batch job records the failure and carries on.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

#: Extensions read as structure files when a folder is given.
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".traj", ".json", ".db")
_STRUCTURE_NAMES = ("POSCAR", "CONTCAR")


@dataclass
class StructureRecord:
    """One input structure: its id, where it came from, and the structure or the reason it is missing."""

    id: str
    source: str
    structure: Any = None
    error: str = ""
    order: str = ""  # "<file>:<frame>": its place in the whole input, set by predict for merge


def clean_id(text: str) -> str:
    """An id safe in every output: control characters (a newline in a file name would split an extxyz
    header) become ``_``."""
    return re.sub(r"[\x00-\x1f\x7f]", "_", str(text))


def file_name_of(structure_id: str) -> str:
    """A file name for a structure id: anything but letters, digits and ``. + = - _`` becomes ``_``."""
    return re.sub(r"[^\w.+=-]", "_", structure_id).lstrip(".") or "_"


#: Keys whose value names a structure, in the order they are looked up in ``info`` (extxyz, ASE db key-
#: value pairs, ...): the first present is the id, else ``<stem>`` (one structure in the file) or
#: ``<stem>:<frame>`` (several; ``<stem>:<row id>`` in a db). ``structure_id`` is what a .db output writes.
ID_KEYS = ("id", "structure_id", "mp_id", "material_id")


def structure_id_of(info: dict, default: str) -> str:
    """The id of a structure from its ``info`` by :data:`ID_KEYS`, else ``default``."""
    given = next((info[key] for key in ID_KEYS if info.get(key) not in (None, "")), None)
    return str(given) if given is not None else default


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


def _is_structure_name(name: str) -> bool:
    return name.lower().endswith(STRUCTURE_SUFFIXES) or name.startswith(_STRUCTURE_NAMES)


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
        elif _is_structure_name(name) and (os.path.isfile(full) or os.path.islink(full)):
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
    """Stream the structures of files, globs and folders as ASE ``Atoms`` records.

    A file with several frames (extxyz, traj, db) yields one record per frame, with the id of
    :func:`structure_id_of` (``info`` keys :data:`ID_KEYS`; in an ASE db its key-value pairs, kept in
    ``info``, else ``<stem>:<row id>``), else ``<stem>:<frame>`` (``<stem>`` for a one-structure file). A
    ``.json`` file may hold a pymatgen Structure (``Structure.to("x.json")``). A file that cannot be
    read yields one record with the error and no structure.
    """
    for path in expand_inputs(inputs, recursive):
        yield from _file_records(path)


def _file_records(path: str) -> Iterator[StructureRecord]:
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


def _frame_record(atoms: Any, path: str, default_id: str) -> StructureRecord:
    structure_id = clean_id(structure_id_of(atoms.info, default_id))
    problem = site_problem(atoms)
    if problem:
        return StructureRecord(structure_id, path, None, f"structure {structure_id!r} ({path}): {problem}")
    return StructureRecord(structure_id, path, atoms)


def _read_frames(path: str) -> Iterator[Any]:
    """Every structure of one file as ASE Atoms, streamed (see :func:`read_structures` for ids)."""
    from ase.io import iread

    suffix = Path(path).suffix.lower()
    if suffix == ".db":
        from ase.db import connect

        for row in connect(path, use_lock_file=False).select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            atoms.info["id"] = structure_id_of(row.key_value_pairs, f"{Path(path).stem}:{row.id}")
            yield atoms
        return
    if suffix == ".json":
        import json

        with open(path) as handle:
            data = json.load(handle)
        if isinstance(data, dict) and "lattice" in data and "sites" in data:  # pymatgen Structure.as_dict()
            from ase import Atoms
            from pymatgen.core import Structure

            structure = Structure.from_dict(data)
            if not structure.is_ordered:
                raise ValueError("field 'species' is disordered (partial occupancies); E3Relax needs one "
                                 "element per site")
            yield Atoms(numbers=[site.specie.Z for site in structure], positions=structure.cart_coords,
                        cell=structure.lattice.matrix, pbc=True)
            return
    yield from iread(path, index=":")


def write_structures(structures: Iterable[tuple[str, Any]], output: str, folder_format: str = "cif") -> int:
    """Write ``(id, Atoms)`` pairs with a :class:`StructureWriter`; returns how many were written."""
    with StructureWriter(output, folder_format) as writer:
        for structure_id, atoms in structures:
            writer.write(structure_id, atoms)
        return writer.count


#: Prefix of an input's ``info`` key that an ASE database reserves for itself (``formula``, ``energy``,
#: an element symbol, ...): the value is stored as ``input_<key>`` in a ``.db`` output (docs/cli.md).
RESERVED_KEY_PREFIX = "input_"


def _db_keys(info: dict) -> dict:
    """The entries of ``info`` an ASE db row can hold as key-value pairs (identifier names with
    numbers, strings or booleans), the structure's own id excluded; keys the database reserves
    (``ase.db.core.reserved_keys``: ``formula``, ``energy``, ``natoms``, element symbols, ...) are
    stored as ``input_<key>``."""
    from ase.db.core import reserved_keys

    keys = {}
    for key, value in info.items():
        scalar = isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating))
        if key in ("id", "structure_id") or not str(key).isidentifier() or not scalar:
            continue
        name = RESERVED_KEY_PREFIX + key if key in reserved_keys else key
        keys[name] = value.item() if isinstance(value, np.generic) else value
    return keys


def output_kind(output: str) -> str:
    """What an output path names: ``"extxyz"`` (``.extxyz``/``.xyz``), ``"db"`` (``.db``) or
    ``"folder"`` (a path ending with a separator or without extension); any other extension is a
    ``ValueError``. The one place that decides it, for the writer, the report name and the CLI."""
    if output.endswith(("/", os.sep)) or not Path(output).suffix:
        return "folder"
    suffix = Path(output).suffix.lower()
    if suffix in (".extxyz", ".xyz"):
        return "extxyz"
    if suffix == ".db":
        return "db"
    raise ValueError(f"output {output!r}: unsupported extension {suffix!r} (use .extxyz, .xyz, .db or a folder)")


FOLDER_FORMATS = {"cif": ("cif", ".cif"), "poscar": ("vasp", ".vasp")}


#: In a folder output, the names of the files e3relax wrote there (one per line): the only files a later
#: run may replace without ``--overwrite``.
WRITTEN_LIST = ".e3relax_written"


class StructureWriter:
    """Writes ``(id, Atoms)`` one at a time, so an interrupted run keeps what it finished, and appends to
    what an earlier run wrote (``e3relax predict --resume``). The output kind comes from ``output``:
    ``.extxyz``/``.xyz`` one multi-frame file (id in ``info["id"]``), ``.db`` an ASE database (id in
    the ``structure_id`` key), a path ending with a separator or without extension a folder of one file
    per structure in ``folder_format`` (``cif`` or ``poscar``, written as ``<id>.vasp``).

    A folder output replaces only files that e3relax wrote there (listed in its :data:`WRITTEN_LIST`);
    another file of the same name is the user's, and writing over it raises ``FileExistsError`` unless
    ``overwrite``."""

    def __init__(self, output: str, folder_format: str = "cif", append: bool = False, overwrite: bool = False):
        self.output = output
        self.count = 0
        self._names: set[str] = set()
        self._handle = None
        self._db = None
        self.overwrite = overwrite
        self._written_before: set[str] = set()
        if folder_format not in FOLDER_FORMATS:
            raise ValueError(f"folder format must be one of {sorted(FOLDER_FORMATS)}, got {folder_format!r}")
        self.kind = output_kind(output)
        if self.kind == "folder":
            self._format, self._suffix = FOLDER_FORMATS[folder_format]
            os.makedirs(output, exist_ok=True)
            listed = os.path.join(output, WRITTEN_LIST)
            if os.path.exists(listed):
                with open(listed) as handle:
                    self._written_before = {line.strip() for line in handle if line.strip()}
        elif self.kind == "extxyz":
            self._handle = open(output, "a" if append else "w")
        else:
            from ase.db import connect

            if not append and os.path.exists(output):
                os.remove(output)
            # no ASE lock file: a killed run would leave it and the next connect would wait forever;
            # e3relax predict holds its own lock (io/outputs.py, OutputLock) instead
            self._db = connect(output, use_lock_file=False)

    def write(self, structure_id: str, atoms: Any) -> None:
        from ase.io import write

        if self.kind == "folder":
            self._write_file(structure_id, atoms)
        elif self.kind == "extxyz":
            atoms = atoms.copy()
            atoms.info["id"] = structure_id
            write(self._handle, atoms, format="extxyz")
            self._handle.flush()
        else:
            # the input's key-value pairs and the confidence go back beside the structure
            self._db.write(atoms, structure_id=structure_id, **_db_keys(atoms.info))
        self.count += 1

    def _write_file(self, structure_id: str, atoms: Any) -> None:
        """One file per structure, named from its id (made unique within the run), written under a
        temporary name and renamed: a kill never leaves half a file under the final name."""
        from ase.io import write

        name = file_name_of(structure_id)
        if name in self._names:
            k = 2
            while f"{name}_{k}" in self._names:
                k += 1
            name = f"{name}_{k}"
        final = os.path.join(self.output, name + self._suffix)
        if os.path.exists(final) and not self.overwrite and name + self._suffix not in self._written_before:
            raise FileExistsError(f"{final} exists and was not written by e3relax predict: it is left as it is "
                                  "(--overwrite replaces such files)")
        self._names.add(name)
        tmp = final + ".tmp"
        write(tmp, atoms, format=self._format)
        with open(os.path.join(self.output, WRITTEN_LIST), "a") as handle:  # before the file exists
            handle.write(name + self._suffix + "\n")
        self._written_before.add(name + self._suffix)
        os.replace(tmp, final)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "StructureWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
