"""Reading and writing structure files as streams, one record per structure.

Reading never raises for one bad file: each record carries either the structure or the error, so a
batch job records the failure and carries on.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, globs and folders (their structure files, sorted) to a list of file paths."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for name in sorted(os.listdir(item)):
                full = os.path.join(item, name)
                if os.path.isfile(full) and (name.lower().endswith(STRUCTURE_SUFFIXES)
                                             or name.startswith(_STRUCTURE_NAMES)):
                    paths.append(full)
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            paths.extend(matches)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} does not exist")
    return paths


def read_structures(inputs: Sequence[str]) -> Iterator[StructureRecord]:
    """Stream the structures of files, globs and folders as ASE ``Atoms`` records.

    A file with several frames (extxyz, traj, db) yields one record per frame, with id
    ``info["id"]`` when present, else ``<stem>:<frame>``. A file that cannot be read yields one record
    with the error and no structure.
    """
    from ase.io import iread

    for path in expand_inputs(inputs):
        stem = Path(path).stem
        try:
            if os.path.getsize(path) == 0:
                raise ValueError("the file is empty")
            frames = list(iread(path, index=":"))
            if not frames:
                raise ValueError("the file holds no structure")
        except Exception as err:  # noqa: BLE001 - any parser failure is recorded, not fatal
            yield StructureRecord(stem, path, None, f"cannot read {path}: {type(err).__name__}: {err}")
            continue
        for index, atoms in enumerate(frames):
            if len(frames) == 1:
                default_id = stem
            else:
                default_id = f"{stem}:{index}"
            yield StructureRecord(str(atoms.info.get("id", default_id)), path, atoms)


def write_structures(structures: Iterable[tuple[str, Any]], output: str) -> int:
    """Write ``(id, Atoms)`` pairs: one extxyz/xyz file (by extension), or a folder of CIFs when
    ``output`` ends with a path separator or has no extension. Returns how many were written."""
    from ase.io import write

    count = 0
    if output.endswith(os.sep) or not Path(output).suffix:
        os.makedirs(output, exist_ok=True)
        for structure_id, atoms in structures:
            write(os.path.join(output, f"{structure_id.replace(os.sep, '_')}.cif"), atoms)
            count += 1
        return count
    suffix = Path(output).suffix.lower()
    if suffix not in (".extxyz", ".xyz"):
        raise ValueError(f"output {output!r}: unsupported extension {suffix!r} (use .extxyz or a folder)")
    frames = []
    for structure_id, atoms in structures:
        atoms = atoms.copy()
        atoms.info["id"] = structure_id
        frames.append(atoms)
    write(output, frames, format="extxyz")
    return len(frames)
