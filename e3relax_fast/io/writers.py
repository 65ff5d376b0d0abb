"""Writing structures as streams: one multi-frame file, an ASE database or a folder of files, appended
to by a resumed run, never replacing a file that e3relax did not write."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def file_name_of(structure_id: str) -> str:
    """A file name for a structure id: anything but letters, digits and ``. + = - _`` becomes ``_``."""
    return re.sub(r"[^\w.+=-]", "_", structure_id).lstrip(".") or "_"


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
