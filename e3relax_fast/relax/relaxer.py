"""The relaxer: a trained E3Relax run on pymatgen Structures or ASE Atoms, the same types out.

:class:`E3Relaxer` is the screening API under ``e3relax predict``: ``prepare`` checks one input and
reduces its basis (``guards.py`` says what is refused), ``run_batch`` runs prepared inputs together and
maps each prediction back (halving a batch that fails), ``relax_many`` streams any number of them
(``stream.py``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..confidence import (ErrorHead, LastLayerCapture, RerunErrorModel, error_model_of, prediction_confidence,
                          rerun_features)
from ..data import batch_from_arrays, flat_graph, reduce_basis, structure_arrays, with_geometry
from ..model import E3Relax
from ..ops import neighbors
from ..ops.checks import check_batch
from ..symmetry import DEFAULT_SYMPREC, find_symmetry, project
from .guards import (MAX_VOLUME_FACTOR, PredictionGuards, check_input_arrays, check_input_distance, is_out_of_memory,
                     shortest_distance, tensor_input, unknown_element_note)
from .result import PreparedInput, RelaxResult
from .stream import BatchBudget, Refinement, StreamedRelaxation, identified

MATMUL_PRECISIONS = ("float32", "bfloat16")


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
        confidence: how ``result.confidence["expected_error"]`` is found (``confidence.py``):
            ``"single-pass"`` (default) from the one run that predicts; ``"rerun"`` also runs the model
            twice more on its own prediction, which ranks the error much better (the model card gives
            the figures) at three times the model's cost. ``"rerun"`` needs a checkpoint whose metadata
            holds a rerun error model (the shipped model has one); the prediction is the same.
    """

    def __init__(self, model: E3Relax, metadata: dict | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, on_unknown_element: str = "error",
                 matmul_precision: str = "float32", on_overlap: str = "input", overlap_ratio: float = 0.6,
                 max_volume_factor: float = MAX_VOLUME_FACTOR, symprec: float | None = DEFAULT_SYMPREC,
                 confidence: str = "single-pass"):
        if on_unknown_element not in ("error", "warn"):
            raise ValueError(f"on_unknown_element must be 'error' or 'warn', got {on_unknown_element!r}")
        self.guards = PredictionGuards(float(max_volume_factor), float(overlap_ratio), on_overlap)
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
        # None: no expected_error; "rerun" without a rerun model in the metadata is refused here
        self.error_model = error_model_of(self.metadata, isinstance(model, E3Relax), confidence)
        self.on_unknown_element = on_unknown_element

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, device: str | torch.device | None = None,
                        backend: str = "auto", **kwargs: Any) -> "E3Relaxer":
        """A relaxer from a shipped model's name or a checkpoint written by ``e3relax train``.

        ``None`` is the default model shipped in the package (``e3relax-small``, see
        ``e3relax_fast/pretrained/MODEL_CARD.md``); nothing is ever downloaded. A ``.ts.pt`` or
        ``.pt2`` file from ``e3relax export`` runs the deployed artifact (in the dtype it was exported in).
        """
        from ..export import is_deployed_artifact, load_deployed
        from ..model.checkpoint import load_model
        from ..model.pretrained import resolve_model_path

        if name_or_path is not None and is_deployed_artifact(name_or_path):
            module, metadata = load_deployed(name_or_path, device)
            kwargs.setdefault("dtype", getattr(torch, metadata["dtype"]))
            return cls(module, metadata, device=device, **kwargs)

        model, metadata = load_model(resolve_model_path(name_or_path), backend=backend,
                                     device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, metadata, device=device, **kwargs)

    def _builds_graphs(self) -> bool:
        """The eager model takes a prebuilt graph; deployed artifacts build theirs inside."""
        return isinstance(self.model, E3Relax)

    def prepare(self, structure_id: str, structure: Any) -> PreparedInput:
        """Check one input (``ValueError``/``TypeError`` naming the structure and field when it is
        refused) and reduce its basis: the model sees the Niggli-reduced basis of the lattice (as in
        training), so every basis of one crystal gets the same prediction; ``run_batch`` maps the
        predicted cells back to the input's basis. Safe to call from several threads."""
        pos, z, cell, pbc = structure_arrays(structure, f"structure {structure_id!r}")
        check_input_arrays(structure_id, (pos, z, cell, pbc), self.model.num_elements)
        reduced, change = reduce_basis(cell, pbc)
        note = unknown_element_note(structure_id, z, self.elements, self.on_unknown_element)
        graph = None
        if self._builds_graphs():
            # The compiled neighbour kernel releases the GIL: worker threads build graphs while the
            # model runs. Same kernel and settings as inside the model, so the edges are identical.
            edge_index, shifts, _ = neighbors(pos, reduced, pbc, self.model.graph_cutoff,
                                              self.model.max_neighbors, self.model.self_images, threads=1)
            graph = (edge_index, shifts)
        closest = shortest_distance(pos, reduced, pbc)
        check_input_distance(structure_id, closest)
        symmetry = None
        if self.symprec is not None and bool(np.all(pbc)):
            symmetry = find_symmetry(pos, z, reduced, self.symprec)
        return PreparedInput((pos, z, reduced, pbc), graph, closest, np.rint(np.linalg.inv(change)), note, symmetry)

    def _forward(self, items: list[tuple[RelaxResult, PreparedInput]]) -> None:
        started = time.perf_counter()
        # each structure was validated alone in prepare
        batch = batch_from_arrays([p.arrays for _, p in items], [r.id for r, _ in items], dtype=torch.float64,
                                  num_elements=self.model.num_elements, validate=False)
        if self._builds_graphs():  # prepare built every structure's graph
            batch.edge_index, batch.shifts = flat_graph([p.graph[0] for _, p in items],
                                                        [p.graph[1] for _, p in items], batch.ptr.tolist())
        on_device = batch.to(self.device, self.dtype)
        with LastLayerCapture(self.model, wanted=isinstance(self.error_model, ErrorHead)) as last_layer:
            # deployed artifacts take (pos, z, cell, pbc, ptr) and build their graphs inside
            pos_layers, cell_layers = self.model(*(on_device.model_inputs() if self._builds_graphs()
                                                   else on_device.tensors()))
        reruns = None
        if isinstance(self.error_model, RerunErrorModel):  # the model run twice more on its prediction
            pos, z, cell, pbc, ptr = on_device.tensors()
            reruns = rerun_features(self.model, pos_layers, cell_layers, z, pbc, ptr, pos, cell)
        pos_layers, cell_layers = pos_layers.double().cpu(), cell_layers.double().cpu()
        summaries = last_layer.summaries(batch.ptr)  # what the learned error head reads (None: no head)
        seconds = (time.perf_counter() - started) / len(items)
        ptr = batch.ptr
        for b, (result, prepared) in enumerate(items):
            a0, a1 = int(ptr[b]), int(ptr[b + 1])
            to_input = torch.from_numpy(prepared.to_input_basis)
            result.trajectory = [with_geometry(result.input, pos_layers[k, a0:a1], to_input @ cell_layers[k, b])
                                 for k in range(pos_layers.shape[0])]
            result.final_structure = result.trajectory[-1]
            result.confidence = prediction_confidence(pos_layers, cell_layers, ptr, b, batch.pos, batch.cell,
                                                      self.error_model, summaries, reruns and reruns[b])
            result.seconds = seconds
            pos, cell = pos_layers[-1, a0:a1].numpy(), cell_layers[-1, b].numpy()
            if prepared.symmetry is not None and np.isfinite(pos).all() and np.isfinite(cell).all():
                pos, cell = project(prepared.symmetry, pos, cell)  # in the reduced basis, where it was found
                result.final_structure = with_geometry(result.input, torch.from_numpy(pos),
                                                       to_input @ torch.from_numpy(cell))
                result.symmetry = prepared.symmetry.label
            self.guards.apply(result, prepared, pos, cell)
            if prepared.note:  # e.g. an element not seen in training, relaxed with on_unknown_element="warn"
                result.warning = "; ".join(w for w in (prepared.note, result.warning) if w)

    @torch.no_grad()
    def run_batch(self, items: list[tuple[RelaxResult, PreparedInput]]) -> None:
        """Run prepared inputs as one batch, filling in their results; a failing batch (out of memory
        above all) is split in halves and retried, so a failure ends up recorded on the one structure
        that causes it, never on its batch mates."""
        try:
            self._forward(items)
        except Exception as err:  # noqa: BLE001 - isolate, then record on the structure
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) > 1:
                half = len(items) // 2
                self.run_batch(items[:half])
                self.run_batch(items[half:])
                return
            result, prepared = items[0]
            kind = "out of memory" if is_out_of_memory(err) else type(err).__name__
            result.error = (f"structure {result.id!r} ({len(prepared.arrays[1])} atoms): {kind} on "
                            f"{self.device}: {str(err).splitlines()[0] if str(err) else ''}")

    def relax(self, structure: Any, structure_id: str = "0") -> RelaxResult:
        """Relax one Structure or Atoms (not modified); invalid input raises ``ValueError``."""
        result = RelaxResult(structure_id, structure)
        self.run_batch([(result, self.prepare(structure_id, structure))])
        if result.error:
            raise RuntimeError(result.error)
        return result

    def relax_many(self, structures: Iterable[Any], ids: Iterable[str] | None = None,
                   budget: BatchBudget = BatchBudget(), refine: Refinement | Any = None) -> Iterator[RelaxResult]:
        """Relax any iterable of Structures/Atoms (or ``(id, structure)`` pairs when ``ids`` is None and
        items are tuples), streamed: a window of inputs at a time is checked and their graphs built in
        threads (the next window while the model runs this one), sorted by size and packed into batches
        within ``budget`` (:class:`BatchBudget`); a window's last, partly filled batch is topped up from
        the next window. Results come back in input order, a window's once all of them are done. A
        structure that fails its checks, or whose batch fails even alone, yields a result with ``error``.

        ``refine``: a :class:`Refinement`, or an ASE calculator (or a factory of one) refined with its
        defaults, that then relaxes each prediction with FIRE + ``FrechetCellFilter``; the outcome is
        ``result.refined``.
        """
        stream = StreamedRelaxation(self, budget, Refinement.of(refine))
        yield from stream.run(identified(structures, ids))

    @torch.no_grad()
    def relax_tensors(self, pos: Any, z: Any, cell: Any, pbc: Any, ptr: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The low-level entry for callers with their own pipeline: a flat batch (see
        :class:`~e3relax_fast.model.E3Relax`) as torch tensors or any DLPack array (numpy, CuPy, JAX),
        taken without a copy where device and dtype already match (a CuPy array on the relaxer's GPU
        stays where it is). Returns torch ``(pos_layers [L,N,3], cell_layers [L,B,3,3])`` on the
        relaxer's device (``cupy.from_dlpack`` takes them back without a copy). Invalid input raises
        ``ValueError`` naming the structure and field."""
        pos, z, cell, pbc, ptr = (tensor_input(a, name) for a, name in
                                  ((pos, "pos"), (z, "z"), (cell, "cell"), (pbc, "pbc"), (ptr, "ptr")))
        for name, tensor in (("pos", pos), ("cell", cell)):
            if tensor.dtype not in (torch.float32, torch.float64):
                # float16 resolves 1e-3 of a coordinate: 0.01 Å at 10 Å, the size of the answer
                raise ValueError(f"field '{name}' must be float32 or float64, got {tensor.dtype}")
        check_batch(pos, cell, pbc, ptr, z, num_elements=self.model.num_elements)
        tensors = (pos.to(self.device, self.dtype), z.to(self.device, torch.long), cell.to(self.device, self.dtype),
                   pbc.to(self.device, torch.bool), ptr.to(self.device, torch.long))
        return self.model(*tensors)
