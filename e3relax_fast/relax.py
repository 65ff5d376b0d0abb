"""Running a model on structures: batches of pymatgen Structures / ASE Atoms in, the same types out.

:class:`E3Relaxer` is the screening API (checkpoints, atom budgets, size-sorted streaming, results in
input order) under ``e3relax predict``.
"""

from __future__ import annotations

import copy
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .confidence import ErrorModel, prediction_confidence
from .data import batch_from_arrays, flat_graph, reduce_basis, structure_arrays, with_geometry
from .data.batching import pack_greedy
from .model import E3Relax
from .ops import neighbors
from .ops.checks import check_batch
from .refine import refine as refine_structure
from .symmetry import DEFAULT_SYMPREC, find_symmetry, project


MATMUL_PRECISIONS = ("float32", "bfloat16")
OVERLAP_POLICIES = ("input", "keep")
#: Pairs farther apart than this (Å) do not decide a structure's shortest distance check.
SHORTEST_DISTANCE_RANGE = 4.0
#: Inputs with two atoms (or an atom and its own image) closer than this (Å) are refused as coincident.
MIN_INPUT_DISTANCE = 0.1
#: A prediction that puts two atoms (or an atom and its own periodic image, a cell edge) closer than
#: this (Å) is refused whatever the input: no bond is that short (H2's is 0.74 Å).
MIN_PREDICTED_DISTANCE = 0.5
#: A prediction whose cell volume is more than this factor above or below the input's is refused:
#: relaxations change volumes by tens of percent, a factor of 2 is a model far outside its data.
MAX_VOLUME_FACTOR = 2.0


def shortest_distance(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> float:
    """Shortest distance (Å) between two atoms, or an atom and its own periodic image, if below
    :data:`SHORTEST_DISTANCE_RANGE`; ``inf`` otherwise."""
    _, _, distances = neighbors(pos, cell, pbc, SHORTEST_DISTANCE_RANGE, max_neighbors=1, self_images="all",
                                threads=1)
    return float(distances.min()) if len(distances) else float("inf")


def _validated_arrays(model: E3Relax, structure: Any, structure_id: str):
    """Arrays of one structure, checked alone so that one bad input never fails its batch."""
    arrays = structure_arrays(structure, f"structure {structure_id!r}")
    pos, z, cell, pbc = (torch.tensor(a) for a in arrays)  # copies: pymatgen hands out read-only views
    check_batch(pos, cell.unsqueeze(0), pbc.unsqueeze(0), torch.tensor([0, len(z)]), z,
                names=[structure_id], num_elements=model.num_elements)
    return arrays


def untrained_model(preset: str = "paper", seed: int = 0) -> E3Relax:
    """A randomly initialised E3Relax from a named config, for demos and pipeline checks only."""
    from .model import E3RelaxConfig

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return E3Relax(E3RelaxConfig.preset(preset)).eval()
    finally:
        torch.random.set_rng_state(generator_state)



# --------------------------------------------------------------------------------------------------
# The screening API


@dataclass
class RelaxResult:
    """One relaxed structure (or why there is none), of the input's type.

    ``trajectory`` holds one structure per layer (the last is the model's prediction). ``confidence``
    holds ``expected_error`` (Å: the expected coordinate MAE of the prediction against the relaxed
    structure, from the checkpoint's fitted error model, ``e3relax_fast/confidence.py``; absent when
    the checkpoint has none), the change the last layer still made: ``last_layer_max_move`` (Å,
    largest atom move) and ``last_layer_cell_change`` (Å, largest cell-entry change), small values
    meaning the layers converged; and ``shortest_distance_ratio``, the prediction's shortest
    interatomic distance over the input's.
    ``warning`` says when the prediction was refused (atoms pushed together: see ``E3Relaxer``'s
    ``on_overlap``); ``final_structure`` is then the input's geometry. Fields read as
    ``result.final_structure`` or ``result["final_structure"]``.
    """

    id: str
    input: Any
    final_structure: Any = None
    trajectory: list = field(default_factory=list)
    confidence: dict = field(default_factory=dict)
    error: str = ""
    warning: str = ""
    seconds: float = 0.0  # this structure's share of its batch's wall time (graph excluded)
    symmetry: str = ""  # the input's space group imposed on the prediction ("" when none: E3Relaxer's symprec)
    refused: bool = False  # the prediction was refused: final_structure is the input geometry (see warning)
    refined: Any = None  # RefineResult (structure, steps, converged, energy) when relaxed with refine=

    @property
    def ok(self) -> bool:
        return not self.error

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


class E3Relaxer:
    """Relax pymatgen Structures or ASE Atoms with a trained E3Relax, one at a time or streamed.

    Args:
        model: the network (eval mode is set here).
        metadata: checkpoint metadata; its ``elements`` are the elements seen in training.
        device, dtype: where and in what precision the model runs (inputs stay float64 on the host).
        on_unknown_element: ``"error"`` (a structure with an element not seen in training gets an
            error result) or ``"warn"`` (it is relaxed, with a warning).
        matmul_precision: ``"float32"`` (default: every product in ``dtype``) or ``"bfloat16"``: the
            channel-mixing products in bfloat16 with float32 accumulation, geometry and heads kept in
            ``dtype`` (:meth:`E3Relax.reduce_matmul_precision`). Fast on CPUs with AMX or AVX512-BF16
            and on GPUs; the predictions move slightly (the README gives the measured change).
        on_overlap: what to return when the prediction's shortest interatomic distance is below
            ``overlap_ratio`` times the input's (on structure types unlike its training data the model
            can push atoms together, which sends a DFT or force-field refinement astray):
            ``"input"`` (default) returns the input geometry as ``final_structure``, ``"keep"`` the
            prediction; both set ``result.warning``.
        overlap_ratio: the threshold of that check (default 0.6: relaxations in the training data
            shorten no distance by more than a few tenths).
        max_volume_factor: a prediction whose cell volume is more than this factor above or below the
            input's, or that is not finite, is refused: the input geometry comes back with a warning
            (default :data:`MAX_VOLUME_FACTOR` = 2; ``inf`` turns the volume check off).
        symprec: tolerance (Å) at which the input's space group is found (spglib) and imposed on the
            prediction's positions and cell, so a symmetric input gives a prediction of the same group
            (``e3relax_fast/symmetry.py``; default 0.01, pymatgen's); ``None`` turns it off.
            ``result.symmetry`` names the group kept; the per-layer ``trajectory`` stays as predicted.
    """

    def __init__(self, model: E3Relax, metadata: dict | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, on_unknown_element: str = "error",
                 matmul_precision: str = "float32", on_overlap: str = "input", overlap_ratio: float = 0.6,
                 max_volume_factor: float = MAX_VOLUME_FACTOR, symprec: float | None = DEFAULT_SYMPREC):
        if on_unknown_element not in ("error", "warn"):
            raise ValueError(f"on_unknown_element must be 'error' or 'warn', got {on_unknown_element!r}")
        if on_overlap not in OVERLAP_POLICIES:
            raise ValueError(f"on_overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {on_overlap!r}")
        if not 0.0 <= overlap_ratio < 1.0:
            raise ValueError(f"overlap_ratio must be in [0, 1), got {overlap_ratio}")
        if not max_volume_factor > 1.0:
            raise ValueError(f"max_volume_factor must be above 1 (inf: no volume check), got {max_volume_factor}")
        self.max_volume_factor = float(max_volume_factor)
        if symprec is not None and not (0.0 < symprec < 1.0):
            raise ValueError(f"symprec must be in (0, 1) Å, or None to keep no symmetry, got {symprec}")
        self.symprec = symprec
        if matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {matmul_precision!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        self.matmul_precision = matmul_precision
        model = model.to(device=self.device, dtype=dtype).eval()
        if isinstance(model, E3Relax) and model.ops_device != self.device.type:
            model.choose_ops(model.backend, self.device)  # the ops of a model built for another device type
        if matmul_precision != "float32":
            if not isinstance(model, E3Relax):
                raise ValueError("matmul_precision applies to checkpoints and shipped models, not to exported "
                                 "artifacts (their precision was fixed at export)")
            model = copy.deepcopy(model).reduce_matmul_precision(getattr(torch, matmul_precision))
        self.model = model
        self.metadata = metadata or {}
        self.elements = set(self.metadata.get("elements") or [])
        self.error_model = ErrorModel.from_metadata(self.metadata)  # None: no expected_error
        self.on_unknown_element = on_unknown_element
        self.on_overlap = on_overlap
        self.overlap_ratio = float(overlap_ratio)

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, device: str | torch.device | None = None,
                        backend: str = "auto", **kwargs: Any) -> "E3Relaxer":
        """A relaxer from a shipped model's name or a checkpoint written by ``e3relax train``.

        ``None`` is the default model shipped in the package (``e3relax-small``, see
        ``e3relax_fast/pretrained/MODEL_CARD.md``); nothing is ever downloaded. A ``.ts.pt`` or
        ``.pt2`` file from ``e3relax export`` runs the deployed artifact (in the dtype it was exported in).
        """
        from .export import is_deployed_artifact, load_deployed
        from .model.checkpoint import load_model
        from .model.pretrained import resolve_model_path

        if name_or_path is not None and is_deployed_artifact(name_or_path):
            module, metadata = load_deployed(name_or_path, device)
            kwargs.setdefault("dtype", getattr(torch, metadata["dtype"]))
            return cls(module, metadata, device=device, **kwargs)

        model, metadata = load_model(resolve_model_path(name_or_path), backend=backend,
                                     device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, metadata, device=device, **kwargs)

    # ----------------------------------------------------------------------------------------------
    def _builds_graphs(self) -> bool:
        """The eager model takes a prebuilt graph; deployed artifacts build theirs inside."""
        return isinstance(self.model, E3Relax)

    def _prepare(self, structure_id: str, structure: Any) -> _Prepared:
        """Validate one input and reduce its basis: the model sees the Niggli-reduced basis of the
        lattice (as in training), so every basis of one crystal gets the same prediction; ``_forward``
        maps the predicted cells back to the input's basis."""
        pos, z, cell, pbc = _validated_arrays(self.model, structure, structure_id)
        note = ""
        reduced, change = reduce_basis(cell, pbc)
        arrays = (pos, z, reduced, pbc)
        if self.elements:
            unknown = sorted({int(z) for z in arrays[1]} - self.elements)
            if unknown:
                from pymatgen.core import Element

                symbols = ", ".join(Element.from_Z(z).symbol for z in unknown)
                found = f"structure {structure_id!r}: field 'species' holds {symbols}, not seen in training"
                if self.on_unknown_element == "error":
                    raise ValueError(found + " (on_unknown_element='warn' relaxes it anyway)")
                warnings.warn(found + " (on_unknown_element='warn' relaxes it anyway)", stacklevel=3)
                note = found + ": relaxed anyway"
        graph = None
        if self._builds_graphs():
            # The compiled neighbour kernel releases the GIL: worker threads build graphs while the
            # model runs. Same kernel and settings as inside the model, so the edges are identical.
            edge_index, shifts, _ = neighbors(arrays[0], arrays[2], arrays[3], self.model.graph_cutoff,
                                              self.model.max_neighbors, self.model.self_images, threads=1)
            graph = (edge_index, shifts)
        closest = shortest_distance(arrays[0], arrays[2], arrays[3])
        if closest < MIN_INPUT_DISTANCE:
            raise ValueError(f"structure {structure_id!r}: field 'positions' puts two atoms {closest:.3g} Å apart "
                             f"(below {MIN_INPUT_DISTANCE} Å: coincident atoms, a duplicated site?)")
        symmetry = None
        if self.symprec is not None and bool(np.all(pbc)):
            symmetry = find_symmetry(arrays[0], arrays[1], arrays[2], self.symprec)
        return _Prepared(arrays, graph, closest, np.rint(np.linalg.inv(change)), note, symmetry)

    def _forward(self, items: list[tuple[RelaxResult, _Prepared]]) -> None:
        started = time.perf_counter()
        # each structure was validated alone in _prepare
        batch = batch_from_arrays([p.arrays for _, p in items], [r.id for r, _ in items], dtype=torch.float64,
                                  num_elements=self.model.num_elements, validate=False)
        if self._builds_graphs():  # _prepare built every structure's graph
            batch.edge_index, batch.shifts = flat_graph([p.graph[0] for _, p in items], [p.graph[1] for _, p in items],
                                                        batch.ptr.tolist())
            pos_layers, cell_layers = self.model(*batch.to(self.device, self.dtype).model_inputs())
        else:  # deployed artifacts take (pos, z, cell, pbc, ptr) and build their graphs inside
            pos_layers, cell_layers = self.model(*batch.to(self.device, self.dtype).tensors())
        pos_layers, cell_layers = pos_layers.double().cpu(), cell_layers.double().cpu()
        seconds = (time.perf_counter() - started) / len(items)
        ptr = batch.ptr
        for b, (result, prepared) in enumerate(items):
            a0, a1 = int(ptr[b]), int(ptr[b + 1])
            to_input = torch.from_numpy(prepared.to_input_basis)
            result.trajectory = [with_geometry(result.input, pos_layers[k, a0:a1], to_input @ cell_layers[k, b])
                                 for k in range(pos_layers.shape[0])]
            result.final_structure = result.trajectory[-1]
            result.confidence = prediction_confidence(pos_layers, cell_layers, ptr, b, batch.pos, batch.cell,
                                                      self.error_model)
            result.seconds = seconds
            pos, cell = pos_layers[-1, a0:a1].numpy(), cell_layers[-1, b].numpy()
            if prepared.symmetry is not None and np.isfinite(pos).all() and np.isfinite(cell).all():
                pos, cell = project(prepared.symmetry, pos, cell)  # in the reduced basis, where it was found
                result.final_structure = with_geometry(result.input, torch.from_numpy(pos),
                                                       to_input @ torch.from_numpy(cell))
                result.symmetry = prepared.symmetry.label
            closest = self._refuse_out_of_bounds(result, prepared, pos, cell)
            if closest is not None:
                self._check_overlap(result, prepared, closest)
            if prepared.note:  # e.g. an element not seen in training, relaxed with on_unknown_element="warn"
                result.warning = "; ".join(w for w in (prepared.note, result.warning) if w)

    def _refuse_out_of_bounds(self, result: RelaxResult, prepared: "_Prepared", pos: np.ndarray,
                              cell: np.ndarray) -> float | None:
        """Refuse (input geometry back, with a warning) a prediction that is not finite, whose volume
        left ``[1/max_volume_factor, max_volume_factor]`` times the input's, or whose shortest distance
        (self-images included) is below :data:`MIN_PREDICTED_DISTANCE`. Returns that shortest distance
        (Å) of an accepted prediction, None when refused."""
        if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
            reason = "holds non-finite positions or cell entries"
        else:
            ratio = abs(float(np.linalg.det(cell) / np.linalg.det(prepared.arrays[2])))  # both in the reduced basis
            if not 1 / self.max_volume_factor <= ratio <= self.max_volume_factor:
                reason = (f"changes the cell volume by a factor of {ratio:.3g} "
                          f"(max_volume_factor={self.max_volume_factor:g})")
            else:
                closest = shortest_distance(pos, cell, prepared.arrays[3])
                if closest >= MIN_PREDICTED_DISTANCE:
                    return closest
                reason = (f"puts two atoms (or an atom and its periodic image) {closest:.3g} Å apart, below the "
                          f"physical floor of {MIN_PREDICTED_DISTANCE} Å")
        result.confidence["shortest_distance_ratio"] = float("nan")
        _return_input_geometry(result)
        result.warning = f"structure {result.id!r}: the prediction {reason}: returned the input geometry"
        return None

    def _check_overlap(self, result: RelaxResult, prepared: "_Prepared", closest: float) -> None:
        # beyond the search range the input's shortest distance is only known to exceed it: the ratio
        # to the range is then an upper bound of the true one, and a prediction beyond it passes
        before = min(prepared.shortest_distance, SHORTEST_DISTANCE_RANGE)
        after = min(closest, SHORTEST_DISTANCE_RANGE)
        ratio = after / before if before > 0 else 1.0
        result.confidence["shortest_distance_ratio"] = ratio
        if ratio >= self.overlap_ratio:
            return
        result.warning = (f"structure {result.id!r}: the prediction puts two atoms {after:.2f} Å apart, "
                          f"{ratio:.2f} of the input's shortest distance {before:.2f} Å (below "
                          f"overlap_ratio={self.overlap_ratio:g}): ")
        if self.on_overlap == "input":
            _return_input_geometry(result)
            result.warning += "returned the input geometry (on_overlap='input')"
        else:
            result.warning += "kept (on_overlap='keep')"

    @torch.no_grad()
    def _run(self, items: list[tuple[RelaxResult, _Prepared]]) -> None:
        """Run one batch; a failing batch (out of memory above all) is split in halves and retried, so
        a failure ends up recorded on the one structure that causes it, never on its batch mates."""
        try:
            self._forward(items)
        except Exception as err:  # noqa: BLE001 - isolate, then record on the structure
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) > 1:
                half = len(items) // 2
                self._run(items[:half])
                self._run(items[half:])
                return
            result, prepared = items[0]
            kind = "out of memory" if _is_out_of_memory(err) else type(err).__name__
            result.error = (f"structure {result.id!r} ({len(prepared.arrays[1])} atoms): {kind} on "
                            f"{self.device}: {str(err).splitlines()[0] if str(err) else ''}")

    def relax(self, structure: Any, structure_id: str = "0") -> RelaxResult:
        """Relax one Structure or Atoms (not modified); invalid input raises ``ValueError``."""
        result = RelaxResult(structure_id, structure)
        self._run([(result, self._prepare(structure_id, structure))])
        if result.error:
            raise RuntimeError(result.error)
        return result

    def relax_many(self, structures: Iterable[Any], max_atoms_per_batch: int = 4096,
                   max_structures_per_batch: int = 256, window: int = 256,
                   ids: Iterable[str] | None = None, max_edges_per_batch: int = 0,
                   num_workers: int = 1, refine: Any = None, fmax: float = 0.05,
                   refine_steps: int = 500) -> Iterator[RelaxResult]:
        """Relax any iterable of Structures/Atoms (or ``(id, structure)`` pairs when ``ids`` is None and
        items are tuples), streamed: ``window`` inputs at a time are validated and their graphs built in
        ``num_workers`` threads (the next window while the model runs this one), sorted by size and
        packed into batches of at most ``max_atoms_per_batch`` atoms and ``max_edges_per_batch`` edges
        (0: no edge budget); a structure over a budget goes alone, and a window's last, partly filled
        batch is topped up from the next window. Results come back in input order, a window's once all
        of them are done. A structure that fails validation, or whose batch fails even alone, yields a
        result with ``error``.

        ``refine``: an ASE calculator, or a zero-argument factory of one, that then relaxes each
        prediction with FIRE + ``FrechetCellFilter`` to ``fmax`` eV/Å in at most ``refine_steps`` steps
        (:func:`e3relax_fast.refine.refine`); the outcome is ``result.refined``.
        """
        if min(max_atoms_per_batch, max_structures_per_batch, window, num_workers) < 1 or max_edges_per_batch < 0:
            raise ValueError("max_atoms_per_batch, max_structures_per_batch, window and num_workers must be >= 1, "
                             "max_edges_per_batch >= 0")

        stream = _StreamedRelaxation(self, (max_atoms_per_batch, max_structures_per_batch, max_edges_per_batch),
                                     refine, fmax, refine_steps)
        yield from stream.run(_identified(structures, ids), window, num_workers)

    @torch.no_grad()
    def relax_tensors(self, pos: Any, z: Any, cell: Any, pbc: Any, ptr: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The low-level entry for callers with their own pipeline: a flat batch (see
        :class:`~e3relax_fast.model.E3Relax`) as torch tensors or any DLPack array (numpy, CuPy, JAX),
        taken without a copy where device and dtype already match (a CuPy array on the relaxer's GPU
        stays where it is). Returns torch ``(pos_layers [L,N,3], cell_layers [L,B,3,3])`` on the
        relaxer's device (``cupy.from_dlpack`` takes them back without a copy). Invalid input raises
        ``ValueError`` naming the structure and field."""
        pos, z, cell, pbc, ptr = (_as_tensor(a, name) for a, name in
                                  ((pos, "pos"), (z, "z"), (cell, "cell"), (pbc, "pbc"), (ptr, "ptr")))
        for name, tensor in (("pos", pos), ("cell", cell)):
            if tensor.dtype not in (torch.float32, torch.float64):
                # float16 resolves 1e-3 of a coordinate: 0.01 Å at 10 Å, the size of the answer
                raise ValueError(f"field '{name}' must be float32 or float64, got {tensor.dtype}")
        check_batch(pos, cell, pbc, ptr, z, num_elements=self.model.num_elements)
        tensors = (pos.to(self.device, self.dtype), z.to(self.device, torch.long), cell.to(self.device, self.dtype),
                   pbc.to(self.device, torch.bool), ptr.to(self.device, torch.long))
        return self.model(*tensors)


def _identified(structures: Iterable[Any], ids: Iterable[str] | None) -> Iterator[tuple[str, Any]]:
    """``(id, structure)`` pairs: from ``ids``, from ``(str, structure)`` items, else the position."""
    id_iter = iter(ids) if ids is not None else None
    for index, item in enumerate(structures):
        if id_iter is not None:
            yield str(next(id_iter)), item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            yield item
        else:
            yield str(index), item


class _StreamedRelaxation:
    """The machinery of :meth:`E3Relaxer.relax_many`, in four steps: ``windows`` of inputs are
    prepared (validated, graphs built) in a thread pool one window ahead; ``pack`` sorts a window by
    size and cuts it into batches within the budgets (``data/batching.py``); each window's batches run
    at once except its last, partly filled one, which is topped up by the next window (``advance``);
    ``emit`` refines and yields a window's results in input order once all of them are done.

    An entry is ``(result, prepared)`` for a valid input, or the bare ``result`` carrying its error.
    """

    def __init__(self, relaxer: "E3Relaxer", budgets: tuple[int, int, int], refine: Any, fmax: float,
                 refine_steps: int):
        self.relaxer = relaxer
        self.max_atoms, self.max_structures, self.max_edges = budgets
        self.refine, self.fmax, self.refine_steps = refine, fmax, refine_steps
        # a calculator class or zero-argument function is called once, on first use, and the calculator
        # reused for every structure of the stream (an ML potential loads its weights once)
        self.refine_is_factory = isinstance(refine, type) or not hasattr(refine, "calculate")
        self.calculator: Any = None
        self.ahead: list[list] = []  # futures of the windows being prepared
        self.waiting: list[list] = []  # prepared windows whose results are not all out yet
        self.carried: list = []  # prepared entries not yet run

    def prepare(self, structure_id: str, structure: Any) -> "RelaxResult | tuple[RelaxResult, _Prepared]":
        result = RelaxResult(structure_id, structure)
        try:
            return result, self.relaxer._prepare(structure_id, structure)
        except (ValueError, TypeError) as err:
            result.error = str(err)
            return result

    def pack(self, entries: list) -> list[list]:
        """Size-sorted entries cut into batches within the atom, structure and edge budgets."""
        entries = sorted(entries, key=lambda p: p[1].size)
        groups = pack_greedy([p[1].size for p in entries], self.max_structures, self.max_atoms,
                             [p[1].num_edges for p in entries], self.max_edges)
        return [[entries[k] for k in group] for group in groups]

    def emit(self, entries: list) -> Iterator[RelaxResult]:
        for entry in entries:
            result = entry[0] if isinstance(entry, tuple) else entry
            if self.refine is not None and result.ok:
                self.refine_one(result)
            yield result

    def refine_one(self, result: RelaxResult) -> None:
        """Refine one prediction; a calculator that fails on it (an element it lacks, a diverging
        optimiser) leaves the prediction as the result, with the failure in its warning (``refined``
        stays None), and the stream carries on."""
        try:
            if self.calculator is None:
                self.calculator = self.refine() if self.refine_is_factory else self.refine
            result.refined = refine_structure(result.final_structure, self.calculator, self.fmax, self.refine_steps)
        except Exception as err:  # noqa: BLE001 - any calculator error belongs to this structure alone
            failure = (f"refinement failed, the E3Relax prediction is kept: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}")
            result.warning = "; ".join(w for w in (result.warning, failure) if w)

    def advance(self, final: bool) -> Iterator[RelaxResult]:
        prepared = [future.result() for future in self.ahead.pop(0)]
        self.waiting.append(prepared)
        batches = self.pack(self.carried + [p for p in prepared if isinstance(p, tuple)])
        self.carried = [] if final or not batches else batches.pop()
        for batch in batches:
            self.relaxer._run(batch)
        while self.waiting and all(_finished(p) for p in self.waiting[0]):
            yield from self.emit(self.waiting.pop(0))

    def run(self, items: Iterator[tuple[str, Any]], window: int, num_workers: int) -> Iterator[RelaxResult]:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            chunk: list[tuple[str, Any]] = []
            for item in items:
                chunk.append(item)
                if len(chunk) >= window:
                    self.ahead.append([pool.submit(self.prepare, *pair) for pair in chunk])
                    chunk = []
                    if len(self.ahead) > 1:
                        yield from self.advance(final=False)
            if chunk:
                self.ahead.append([pool.submit(self.prepare, *pair) for pair in chunk])
            while self.ahead:
                yield from self.advance(final=not self.ahead[1:])


def _finished(entry: Any) -> bool:
    result = entry[0] if isinstance(entry, tuple) else entry
    return bool(result.error) or result.final_structure is not None


def _return_input_geometry(result: RelaxResult) -> None:
    """A refused prediction: ``final_structure`` becomes a copy of the input, exactly (its cell in the
    user's basis, not mapped back from the reduced one); the prediction stays ``trajectory[-1]``."""
    result.final_structure = result.input.copy()
    result.refused = True


@dataclass
class _Prepared:
    arrays: tuple  # (pos, z, cell, pbc) numpy, the cell in the reduced basis the model sees
    graph: tuple | None  # (edge_index [2,E], shifts [E,3]) numpy, or None when the model builds its own
    shortest_distance: float = float("inf")  # of the input, Å
    # integer [3,3]: input cell = to_input_basis @ reduced cell (unimodular)
    to_input_basis: np.ndarray = field(default_factory=lambda: np.eye(3))
    note: str = ""  # a warning the result carries whatever the prediction (an unknown element)
    symmetry: Any = None  # InputSymmetry of the input in the reduced basis (e3relax_fast/symmetry.py), or None

    @property
    def size(self) -> int:
        return len(self.arrays[1])

    @property
    def num_edges(self) -> int:
        return self.graph[0].shape[1] if self.graph is not None else 0


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower() or \
        "can't allocate memory" in str(err).lower()


def _as_tensor(array: Any, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    if hasattr(array, "__dlpack__"):
        try:
            return torch.from_dlpack(array)
        except (RuntimeError, TypeError, BufferError):
            pass  # e.g. a read-only numpy array: fall back to a copy
    try:
        return torch.as_tensor(np.asarray(array))
    except (TypeError, ValueError) as err:
        raise ValueError(f"field {name!r}: not an array ({type(array).__name__}): {err}") from None
