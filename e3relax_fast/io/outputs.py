"""What keeps a long ``e3relax predict`` run's output whole: its report's name, a lock against a second
job on the same files, and the repair a resumed run makes of what a killed one left.

The rule that makes resuming exact: a structure is written (and flushed) before its report row, and
the report is the record of what is finished. A kill can therefore leave, at worst, a frame without a
report row, or half a frame; :func:`repair_output` removes both before a resumed run appends, so the
output holds each reported id once and nothing else.
"""

from __future__ import annotations

import csv
import os
import socket
import time
from pathlib import Path
from typing import Sequence

from .structures import expand_inputs
from .writers import output_kind


def report_path(output: str, shard_index: int = 0, shard_count: int = 1) -> str:
    """Default report of an output: ``OUT.extxyz`` -> ``OUT_report.csv``, a folder ``runs/v1.2/out/`` ->
    ``runs/v1.2/out_report.csv``; shard ``i`` of ``n > 1`` -> ``..._shard<i>of<n>_report.csv``, so
    shards writing into one folder keep one report each."""
    path = Path(output.rstrip("/" + os.sep))
    base = path if output_kind(output) == "folder" else path.with_suffix("")
    shard = f"_shard{shard_index}of{shard_count}" if shard_count > 1 else ""
    return str(base.with_name(base.name + shard + "_report.csv"))


def finished_ids(report: str) -> set[str]:
    """Ids an earlier run reported (ok or error): ``--resume`` skips them. A report that is empty or
    lost its header (a run killed before its first row) holds none."""
    if not os.path.exists(report) or os.path.getsize(report) == 0:
        return set()
    with open(report, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            return set()
        return {row["id"] for row in reader if row.get("id")}


def repair_report(report: str) -> bool:
    """Cut a half-written last row (a kill while writing it) off the report, so a resumed run neither
    counts its id as finished nor appends to its line; True when something was cut. Complete rows end
    with a newline; the last newline marks the end of what was finished."""
    if not os.path.exists(report) or os.path.getsize(report) == 0:
        return False
    with open(report, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return False
        handle.truncate(data.rfind(b"\n") + 1)
    return True


def report_has_header(report: str) -> bool:
    if not os.path.exists(report) or os.path.getsize(report) == 0:
        return False
    with open(report, newline="") as handle:
        return "id" in (next(csv.reader(handle), None) or [])


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both already real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def refuse_outputs_touching_inputs(inputs: Sequence[str], outputs: dict[str, str], output_folder: str = "",
                                   files: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming both paths when a path the run would write (``outputs``: what ->
    path, e.g. the output, the report, their locks) is an input or lies inside an input folder, or when
    the folder output (``output_folder``) holds an input: the user's files are never written over.
    ``inputs`` as given on the command line (files, folders, globs); ``files`` their expansion when the
    caller has it already (``expand_inputs``). Checked before anything is written; links are followed."""
    folders = [os.path.realpath(item) for item in inputs if os.path.isdir(item)]
    files = [os.path.realpath(path) for path in (expand_inputs(inputs) if files is None else files)]
    for what, path in outputs.items():
        real = os.path.realpath(path)
        for given in files + folders:
            if _inside(real, given):
                kind = "the input folder" if given in folders else "the input"
                raise ValueError(f"the {what} {path!r} would be written {'as' if real == given else 'inside'} "
                                 f"{kind} {given!r}: choose an output outside the inputs")
    if output_folder:
        real_folder = os.path.realpath(output_folder)
        for given in files:
            if _inside(given, real_folder):
                raise ValueError(f"the output folder {output_folder!r} holds the input {given!r}, which a "
                                 "prediction of the same name would replace: choose another output folder")


#: Seconds after which another host's lock, not renewed since, is stale (a job renews its lock as it
#: writes report rows, at most every LOCK_RENEW_S): a job requeued on another node then resumes by itself.
LOCK_LEASE_S = 600.0
LOCK_RENEW_S = 30.0


class OutputLock:
    """An exclusive lock file ``<path>.lock`` holding ``host pid``; a second job on the same path is an
    error naming the first. A lock is stale, and replaced with a message, when its process is gone (same
    host, no such pid) or, from another host, when it was not renewed for :data:`LOCK_LEASE_S`
    (:meth:`renew`); ``force`` (``--break-lock``) replaces any lock. Used as a context manager; removed
    on exit."""

    def __init__(self, path: str, force: bool = False):
        self.path = str(path) + ".lock"
        self.replaced_stale = ""
        self.force = force
        self._renewed = 0.0

    def renew(self) -> None:
        """Renew the lease (the lock file's time), at most every :data:`LOCK_RENEW_S` seconds."""
        now = time.time()
        if now - self._renewed >= LOCK_RENEW_S:
            os.utime(self.path)
            self._renewed = now

    def __enter__(self) -> "OutputLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise RuntimeError(f"cannot take the lock {self.path}")

    def _check_stale(self) -> None:
        try:
            host, pid = Path(self.path).read_text().split()
            age = time.time() - os.path.getmtime(self.path)
            here = host == socket.gethostname()
            alive = _process_alive(int(pid)) if here else age < LOCK_LEASE_S
        except (OSError, ValueError):
            host, pid, here, alive = "?", "?", True, False  # unreadable or half-written: its writer died at once
        if alive and not self.force:
            raise RuntimeError(f"{self.path} says another e3relax job (pid {pid} on {host}) writes this output: "
                               "give each job its own output (or --shard I/N and its own report); if that job is "
                               f"gone, --break-lock takes the lock over (another host's lock lapses by itself "
                               f"{LOCK_LEASE_S:.0f} s after its last renewal)")
        why = ("taken over (--break-lock)" if alive else "which no longer runs" if here
               else f"not renewed for {LOCK_LEASE_S:.0f} s")
        self.replaced_stale = f"removed a stale lock {self.path} left by pid {pid} on {host}, {why}"
        os.remove(self.path)

    def __exit__(self, *exc) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def repair_output(output: str, kind: str, done: set[str]) -> int:
    """Before a resumed run appends: drop from ``output`` every structure whose id is not in ``done``
    (written, then killed before its report row) or that is there twice, and a half-written extxyz
    tail. Returns how many entries were dropped. Folder outputs need none: each file is written to a
    temporary name and renamed, and a file of an unreported id is simply written again."""
    if kind == "extxyz":
        return _repair_extxyz(output, done)
    if kind == "db":
        return _repair_db(output, done)
    return 0


def _extxyz_frames(output: str) -> tuple[list[tuple[int, str]], int]:
    """``([(byte offset, id), ...], end)`` of the whole frames of an extxyz file, read line by line
    without parsing coordinates; ``end`` is where the last whole frame ends (a half-written tail
    starts there)."""
    from ase.io.extxyz import key_val_str_to_dict

    frames, end = [], 0
    with open(output, "rb") as handle:
        while True:
            start = handle.tell()
            count_line, comment = handle.readline(), handle.readline()
            try:
                count = int(count_line)
                structure_id = str(key_val_str_to_dict(comment.decode()).get("id", ""))
            except (ValueError, UnicodeDecodeError):
                return frames, start
            lines = [handle.readline() for _ in range(count)]
            if not comment.endswith(b"\n") or any(not line.endswith(b"\n") for line in lines):
                return frames, start
            frames.append((start, structure_id))
            end = handle.tell()


def _repair_extxyz(output: str, done: set[str]) -> int:
    """Keep each reported frame once, as the bytes it was written with. When what must go is a tail
    (the usual kill), the file is cut there and the resumed run appends; otherwise the kept frames are
    copied to a new file that replaces it."""
    if not os.path.exists(output):
        return 0
    frames, end = _extxyz_frames(output)
    seen: set[str] = set()
    keep = []
    for _, structure_id in frames:
        keep.append(structure_id in done and structure_id not in seen)
        seen.add(structure_id)
    dropped = keep.count(False) + (os.path.getsize(output) > end)  # + a half-written tail
    first_dropped = keep.index(False) if False in keep else len(keep)
    if not any(keep[first_dropped:]):
        with open(output, "rb+") as handle:
            handle.truncate(frames[first_dropped][0] if first_dropped < len(frames) else end)
        return dropped
    bounds = [start for start, _ in frames] + [end]
    tmp = output + ".repair.tmp"
    with open(output, "rb") as source, open(tmp, "wb") as target:
        for k, kept in enumerate(keep):
            if kept:
                source.seek(bounds[k])
                target.write(source.read(bounds[k + 1] - bounds[k]))
    os.replace(tmp, output)
    return dropped


def _repair_db(output: str, done: set[str]) -> int:
    from ase.db import connect

    if not os.path.exists(output):
        return 0
    db = connect(output, use_lock_file=False)
    seen, drop = set(), []
    for row in db.select():
        structure_id = str(row.get("structure_id", ""))
        if structure_id in done and structure_id not in seen:
            seen.add(structure_id)
        else:
            drop.append(row.id)
    if drop:
        db.delete(drop)
    return len(drop)
