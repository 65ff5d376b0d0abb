"""The training store: pairs as plain, memory-mappable arrays (no pickle anywhere).

A store is a folder:

- ``store.json``: format, version, graph settings the edges were built with (cutoff Å,
  max_neighbors, self_images), counts, the dtype and shape of every array, the pair sources, the
  split seed and fractions, package versions;
- one raw little-endian file per array (``<name>.bin``), read with ``numpy.memmap``:
  ``atom_ptr [B+1]``, ``edge_ptr [B+1]`` (int64), ``z [N]`` (int16), ``pos_unrelaxed``,
  ``pos_relaxed [N,3]`` (float64, Å; relaxed unwrapped to the image nearest the unrelaxed atom),
  ``cell_unrelaxed``, ``cell_relaxed [B,3,3]`` (float64, Å, rows; both in the Niggli-reduced basis
  of the unrelaxed lattice, :func:`~e3relax_fast.data.convert.reduce_basis`, as the relaxer reduces
  its inputs), ``pbc [B,3]`` (bool),
  ``edges [E,2]`` (int32, (source j, target i) local to the structure, sorted by target then distance),
  ``shifts [E,3]`` (int32), ``split [B]`` (int8 index into ``store.json["split_names"]``);
- ``pairs.csv``: one row per stored pair (index, id, group, split, atoms, edges, source, kind:
  ``pair``, or ``perturbation`` for a pair made from a relaxed structure by ``data/perturb.py``);
- ``failures.csv``: one row per pair that was skipped, with the reason.

Writing streams: pairs are converted (validated, unwrapped, graph built with our radius-graph op) in
worker processes and appended in input order, so memory stays flat however many pairs there are.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..ops import check_batch, radius_graph
from .batching import CrystalBatch, flat_graph
from .convert import reduce_basis, unwrap_positions
from .pairs import PATH_KIND, PERTURBATION_KIND, PairRecord

STORE_FORMAT = "e3relax-pair-store"
STORE_VERSION = 1

_ARRAYS: dict[str, tuple[str, tuple[int, ...], str]] = {
    # name: (dtype, trailing shape, what indexes the first axis)
    "z": ("int16", (), "atom"),
    "pos_unrelaxed": ("float64", (3,), "atom"),
    "pos_relaxed": ("float64", (3,), "atom"),
    "cell_unrelaxed": ("float64", (3, 3), "pair"),
    "cell_relaxed": ("float64", (3, 3), "pair"),
    "pbc": ("bool", (3,), "pair"),
    "edges": ("int32", (2,), "edge"),
    "shifts": ("int32", (3,), "edge"),
}


@dataclass(frozen=True)
class GraphSettings:
    """How the stored graphs were built; a model trained on the store must use the same."""

    cutoff: float = 6.0
    max_neighbors: int = 50
    self_images: str = "paper"

    def to_dict(self) -> dict:
        return {"cutoff": self.cutoff, "max_neighbors": self.max_neighbors, "self_images": self.self_images}

    def require_model(self, model_config, store: str) -> None:
        """Raise ``ValueError`` unless ``model_config`` (an :class:`E3RelaxConfig`) builds the same graph."""
        wanted = (model_config.graph_cutoff, model_config.max_neighbors, model_config.self_images)
        if (self.cutoff, self.max_neighbors, self.self_images) != wanted:
            raise ValueError(f"store {store!r} was built with graph {self.to_dict()}, but the model asks for "
                             f"cutoff={wanted[0]}, max_neighbors={wanted[1]}, self_images={wanted[2]!r}: "
                             "preprocess again or change model.*")


def prepare_pair(record: PairRecord, graph: GraphSettings) -> dict[str, np.ndarray]:
    """Validate one pair, reduce its basis, unwrap its relaxed positions, build its graph on the
    unrelaxed side. Both cells are expressed in the Niggli-reduced basis of the unrelaxed lattice
    (the same integer change of basis for both, so the target keeps the input's basis).

    Returns the per-pair arrays of the store; raises ``ValueError`` naming the pair and the field.
    """
    if not record.ok:
        raise ValueError(record.error)
    names = [record.id]
    sides = {}
    for side, (pos, z, cell, pbc) in (("unrelaxed", record.unrelaxed), ("relaxed", record.relaxed)):
        # copies: the readers may hand over read-only views
        pos_t, cell_t = torch.tensor(pos, dtype=torch.float64), torch.tensor(cell, dtype=torch.float64)
        z_t, pbc_t = torch.tensor(z, dtype=torch.long), torch.tensor(pbc, dtype=torch.bool)
        ptr = torch.tensor([0, len(z)])
        try:
            check_batch(pos_t, cell_t.unsqueeze(0), pbc_t.unsqueeze(0), ptr, z_t, names=names)
        except ValueError as err:
            raise ValueError(f"{side} side: {err}") from None
        sides[side] = (pos_t, z_t, cell_t, pbc_t, ptr)
    pos_u, z, cell_u, pbc, ptr = sides["unrelaxed"]
    pos_r, _, cell_r, _, _ = sides["relaxed"]
    reduced, change = reduce_basis(cell_u.numpy(), pbc.numpy())
    cell_u, cell_r = torch.from_numpy(reduced), torch.from_numpy(change.astype(np.float64)) @ cell_r
    edge_index, shifts, _ = radius_graph(pos_u, cell_u.unsqueeze(0), pbc.unsqueeze(0), ptr, graph.cutoff,
                                         max_neighbors=graph.max_neighbors, self_images=graph.self_images)
    return {
        "z": z.numpy().astype(np.int16),
        "pos_unrelaxed": pos_u.numpy(),
        "pos_relaxed": unwrap_positions(pos_r, cell_r, pos_u).numpy(),
        "cell_unrelaxed": cell_u.numpy()[None],
        "cell_relaxed": cell_r.numpy()[None],
        "pbc": pbc.numpy()[None],
        "edges": edge_index.t().numpy().astype(np.int32),
        "shifts": shifts.numpy().astype(np.int32),
    }


def _prepare_chunk(args: tuple[list[PairRecord], GraphSettings]) -> list[tuple[PairRecord, dict | str]]:
    records, graph = args
    out: list[tuple[PairRecord, dict | str]] = []
    for record in records:
        try:
            out.append((record, prepare_pair(record, graph)))
        except (ValueError, TypeError, RuntimeError) as err:
            out.append((record, str(err)))
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)  # the workers are the parallelism; one OpenMP team each


def _chunks(records: Iterable[PairRecord], size: int, graph: GraphSettings):
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk, graph


def source_name(label: str, kind: str = "pair") -> str:
    """Short name of a store source for logs and reports: the folder of its first file (``mp``,
    ``perov5``, ``chgnet_pairs``), ``:perturbed`` added for perturbation pairs; relaxation-path frames
    (``mp_pairs2/path/...``) are named by the folder above ``path/``, with ``:path`` added."""
    first = label.split(" ")[0].removeprefix("structures:") if label else ""
    folder = Path(first).parent
    if kind == PATH_KIND and folder.name == "path":
        folder = folder.parent
    name = folder.name or first or "pairs"
    suffix = {PERTURBATION_KIND: ":perturbed", PATH_KIND: ":path"}.get(kind, "")
    return name + suffix


def group_draw(group: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, group)`` alone (SHA-256), so a group's split never depends
    on which other pairs are in the store: adding data later moves no pair between splits."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign_splits(groups: Sequence[str], given: Sequence[str], fractions: dict[str, float], seed: int
                  ) -> list[str]:
    """Split names per pair. Pairs whose source names a split keep it; the others go by group (all
    pairs of one group land in one split): the group's :func:`group_draw` falls into the interval of
    one split, each non-train split taking its fraction of [0, 1) in name order, ``train`` the rest.
    The fractions are thus of groups, in expectation."""
    bounds, start = [], 0.0
    for name in sorted(n for n in fractions if n != "train"):
        bounds.append((start, start + fractions[name], name))
        start += fractions[name]
    if start >= 1.0:
        raise ValueError(f"split fractions {fractions} leave nothing for train")
    result = list(given)
    for i, split in enumerate(given):
        if not split:
            u = group_draw(groups[i], seed)
            result[i] = next((name for lo, hi, name in bounds if lo <= u < hi), "train")
    return result


def write_store(
    records: Iterable[PairRecord],
    out_dir: str | Path,
    graph: GraphSettings = GraphSettings(),
    *,
    split_fractions: dict[str, float] | None = None,
    seed: int = 0,
    workers: int = 0,
    chunk_size: int = 64,
    sources: Sequence[str] = (),
    progress: bool = True,
    overwrite: bool = False,
    perturbation: dict | None = None,
) -> dict:
    """Stream ``records`` into a store at ``out_dir``; returns the store's metadata.

    ``split_fractions`` (default ``{"val": 0.1}``, the rest train; fractions of groups) applies to pairs
    whose source names no split. Bad pairs go to ``failures.csv`` and are skipped. ``workers`` > 0 converts in that
    many processes. ``perturbation`` (the :class:`~e3relax_fast.data.perturb.PerturbConfig` of any
    ``--structures`` source, as a dict) is recorded in ``store.json``: training draws fresh inputs of
    those pairs with it.
    """
    out = _empty_folder(Path(out_dir), overwrite)
    split_fractions = dict(split_fractions if split_fractions is not None else {"val": 0.1})
    written = _write_arrays(records, out, graph, workers, chunk_size, progress)
    if not written.rows:
        failures = written.failures
        raise ValueError(f"no usable pair in the sources ({len(failures)} failed; first: "
                         f"{failures[0][1] if failures else 'none given'})")
    splits = assign_splits([r[1] for r in written.rows], [r[2] for r in written.rows], split_fractions, seed)
    split_names = sorted(set(splits) | {"train"}, key=lambda s: (s != "train", s))
    _write_tables(out, written, splits, split_names)
    meta = _store_metadata(written, graph, splits, split_names, split_fractions, seed, sources, perturbation)
    (out / "store.json").write_text(json.dumps(meta, indent=1))
    return meta


def _empty_folder(out: Path, overwrite: bool) -> Path:
    """``out``, created, or emptied when ``overwrite``; a folder holding anything else is an error."""
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise ValueError(f"store folder {str(out)!r} exists and is not empty (pass overwrite=True / --overwrite)")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _store_metadata(written: "_Written", graph: GraphSettings, splits: list[str], split_names: list[str],
                    split_fractions: dict[str, float], seed: int, sources: Sequence[str],
                    perturbation: dict | None) -> dict:
    """The contents of ``store.json``: format, graph settings, counts, splits, sources, array layout."""
    from .._version import __version__

    counts = {"pair": len(written.rows), "atom": written.atom_ptr[-1], "edge": written.edge_ptr[-1]}
    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "graph": graph.to_dict(),
        "num_pairs": counts["pair"],
        "num_atoms": counts["atom"],
        "num_edges": counts["edge"],
        "num_failures": len(written.failures),
        "split_names": split_names,
        "split_counts": {s: splits.count(s) for s in split_names},
        "split_fractions": split_fractions,
        "split_seed": seed,
        "sources": list(sources),
        "perturbation": perturbation,
        "arrays": {name: {"dtype": dtype, "shape": [counts[axis], *shape]}
                   for name, (dtype, shape, axis) in _ARRAYS.items()},
        "versions": {"e3relax_fast": __version__, "torch": torch.__version__, "numpy": np.__version__},
    }


@dataclass
class _Written:
    """What :func:`_write_arrays` appended: per-pair rows (id, group, given split, atoms, edges,
    source, kind), the atom and edge pointers, and the failures (id, reason)."""

    rows: list
    atom_ptr: list
    edge_ptr: list
    failures: list


def _write_arrays(records: Iterable[PairRecord], out: Path, graph: GraphSettings, workers: int, chunk_size: int,
                  progress: bool) -> _Written:
    """Convert the records (in ``workers`` processes, in input order) and append each pair's arrays
    to the ``<name>.bin`` files; a pair that fails is recorded, not written."""
    from tqdm import tqdm

    written = _Written([], [0], [0], [])
    handles = {name: open(out / f"{name}.bin", "wb") for name in _ARRAYS}
    bar = tqdm(unit="pair", desc="preprocess", disable=not progress, file=sys.stderr)
    pool = (multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init)
            if workers > 0 else None)
    try:
        chunks = _chunks(records, chunk_size, graph)
        results: Iterator = pool.imap(_prepare_chunk, chunks) if pool else map(_prepare_chunk, chunks)
        for record, arrays in (item for chunk in results for item in chunk):
            bar.update(1)
            if isinstance(arrays, str):
                written.failures.append((record.id, arrays))
                continue
            for name, handle in handles.items():
                handle.write(np.ascontiguousarray(arrays[name], dtype=_ARRAYS[name][0]).tobytes())
            written.atom_ptr.append(written.atom_ptr[-1] + len(arrays["z"]))
            written.edge_ptr.append(written.edge_ptr[-1] + len(arrays["edges"]))
            written.rows.append((record.id, record.group, record.split, len(arrays["z"]), len(arrays["edges"]),
                                 record.source, record.kind))
    finally:
        bar.close()
        for handle in handles.values():
            handle.close()
        if pool:
            pool.terminate()
    return written


def _write_tables(out: Path, written: _Written, splits: list[str], split_names: list[str]) -> None:
    """``split.bin``, the pointers, ``pairs.csv`` and ``failures.csv``."""
    np.asarray([split_names.index(s) for s in splits], dtype=np.int8).tofile(out / "split.bin")
    np.asarray(written.atom_ptr, dtype=np.int64).tofile(out / "atom_ptr.bin")
    np.asarray(written.edge_ptr, dtype=np.int64).tofile(out / "edge_ptr.bin")
    with open(out / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", "group", "split", "atoms", "edges", "source", "kind"])
        for index, ((pair_id, group, _, atoms, edges, source, kind), split) in enumerate(zip(written.rows, splits)):
            writer.writerow([index, pair_id, group, split, atoms, edges, source, kind])
    with open(out / "failures.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "error"])
        writer.writerows(written.failures)


class PairStore:
    """Read access to a store folder; arrays are memory-mapped, nothing is loaded up front."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{str(self.path)!r} is not a pair store (no store.json); "
                                    "make one with `e3relax preprocess`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != STORE_FORMAT or self.meta.get("version") != STORE_VERSION:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r} version {self.meta.get('version')!r}, "
                             f"expected {STORE_FORMAT!r} version {STORE_VERSION}")
        self.graph = GraphSettings(**self.meta["graph"])
        b = self.meta["num_pairs"]
        self.arrays = {name: self._map(name, spec["dtype"], tuple(spec["shape"]))
                       for name, spec in self.meta["arrays"].items()}
        self.atom_ptr = self._map("atom_ptr", "int64", (b + 1,))
        self.edge_ptr = self._map("edge_ptr", "int64", (b + 1,))
        self.split = self._map("split", "int8", (b,))
        with open(self.path / "pairs.csv", newline="") as handle:
            table = list(csv.DictReader(handle))
        self.ids = [row["id"] for row in table]
        self.groups = [row["group"] for row in table]
        self.sources = [row.get("source", "") for row in table]
        self.kinds = [row.get("kind") or "pair" for row in table]

    def _map(self, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.path / f"{name}.bin"
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype)
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if os.path.getsize(path) != expected:
            raise ValueError(f"{path}: {os.path.getsize(path)} bytes, store.json says {expected}")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return int(self.meta["num_pairs"])

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per pair [B]."""
        return np.diff(self.atom_ptr)

    @property
    def num_edges(self) -> np.ndarray:
        return np.diff(self.edge_ptr)

    def indices(self, split: str) -> np.ndarray:
        """Pair indices of one split (``"all"``: every pair)."""
        if split == "all":
            return np.arange(len(self))
        names = self.meta["split_names"]
        if split not in names:
            raise ValueError(f"store {str(self.path)!r} has no split {split!r}; it has {', '.join(names)}")
        return np.nonzero(np.asarray(self.split) == names.index(split))[0]

    def elements(self, indices: Sequence[int] | None = None) -> list[int]:
        """Atomic numbers present in the given pairs (all pairs by default), sorted."""
        z = np.asarray(self.arrays["z"])
        if indices is not None:
            z = np.concatenate([z[self.atom_ptr[i]:self.atom_ptr[i + 1]] for i in indices]) if len(indices) else z[:0]
        return sorted(int(v) for v in np.unique(z))

    @property
    def has_graphs(self) -> bool:
        """Whether the graphs are stored; a compact store (:func:`write_compact_store`) leaves them to
        be built again, with the store's graph settings, when pairs are batched."""
        return "edges" in self.arrays

    def batch(self, indices: Sequence[int]) -> CrystalBatch:
        """Stored pairs stacked into a :class:`~e3relax_fast.data.batching.CrystalBatch` with their graphs
        and targets (float64; the stored ``edges [E, 2]`` become the flat ``edge_index [2, E]``; ids are
        the store ids). A compact store's graphs are built here, with the store's graph settings."""
        pairs = [self.pair(int(i)) for i in indices]
        offsets = np.concatenate([[0], np.cumsum([len(p["z"]) for p in pairs])]).astype(np.int64)
        pos = torch.from_numpy(np.concatenate([p["pos_unrelaxed"] for p in pairs]).astype(np.float64, copy=False))
        cell = torch.from_numpy(np.stack([p["cell_unrelaxed"] for p in pairs]).astype(np.float64, copy=False))
        pbc = torch.from_numpy(np.stack([p["pbc"] for p in pairs]))
        if self.has_graphs:
            edge_index, shifts = flat_graph([p["edges"].T for p in pairs], [p["shifts"] for p in pairs], offsets)
        else:
            graph = self.graph
            edge_index, shifts, _ = radius_graph(pos, cell, pbc, torch.from_numpy(offsets), graph.cutoff,
                                                 max_neighbors=graph.max_neighbors, self_images=graph.self_images)
        return CrystalBatch(
            pos=pos,
            z=torch.from_numpy(np.concatenate([p["z"] for p in pairs]).astype(np.int64)),
            cell=cell,
            pbc=pbc,
            ptr=torch.from_numpy(offsets),
            ids=[self.ids[int(i)] for i in indices],
            edge_index=edge_index,
            shifts=shifts,
            target_pos=torch.from_numpy(np.concatenate([p["pos_relaxed"] for p in pairs]).astype(np.float64, copy=False)),
            target_cell=torch.from_numpy(np.stack([p["cell_relaxed"] for p in pairs]).astype(np.float64, copy=False)),
            indices=torch.from_numpy(np.asarray(indices, dtype=np.int64)),
        )

    def pair(self, index: int) -> dict[str, np.ndarray]:
        """Arrays of pair ``index`` (copies): atoms ``z, pos_unrelaxed, pos_relaxed``, cells ``[3,3]``,
        ``pbc [3]``, ``edges [E,2]``, ``shifts [E,3]`` (no graph in a compact store)."""
        if not 0 <= index < len(self):
            raise IndexError(f"pair index {index} out of range for a store of {len(self)}")
        a0, a1 = int(self.atom_ptr[index]), int(self.atom_ptr[index + 1])
        e0, e1 = int(self.edge_ptr[index]), int(self.edge_ptr[index + 1])
        out = {}
        for name, (_, _, axis) in _ARRAYS.items():
            if name not in self.arrays:
                continue
            source = self.arrays[name]
            if axis == "atom":
                out[name] = np.array(source[a0:a1])
            elif axis == "edge":
                out[name] = np.array(source[e0:e1])
            else:
                out[name] = np.array(source[index])
        return out


def write_compact_store(store: PairStore, out: str | Path, dtype: str = "float32") -> dict:
    """A copy of ``store`` without its graphs (about a third of its size), positions and cells in
    ``dtype``: what travels to a machine that builds graphs faster than it can receive them (a GPU
    machine's working tree is capped at 64 MiB; scripts/device_train.sh). The graph settings, splits,
    ids, groups, sources and kinds are kept; training rebuilds each batch's graph with those settings.
    Returns the new ``store.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps(store.meta))
    for name in ("edges", "shifts"):
        meta["arrays"].pop(name, None)
    meta["compact"] = {"from": str(store.path), "dtype": dtype}
    for name, spec in meta["arrays"].items():
        if name.startswith(("pos_", "cell_")):
            spec["dtype"] = dtype
        np.ascontiguousarray(store.arrays[name], dtype=spec["dtype"]).tofile(out / f"{name}.bin")
    np.asarray(store.atom_ptr, dtype=np.int64).tofile(out / "atom_ptr.bin")
    np.zeros(len(store) + 1, dtype=np.int64).tofile(out / "edge_ptr.bin")
    np.asarray(store.split, dtype=np.int8).tofile(out / "split.bin")
    for name in ("pairs.csv", "failures.csv"):
        if (store.path / name).exists():
            (out / name).write_bytes((store.path / name).read_bytes())
    (out / "store.json").write_text(json.dumps(meta, indent=1))
    return meta
