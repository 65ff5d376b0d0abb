"""Running a model on structures: batches of pymatgen Structures / ASE Atoms in, the same types out.

:class:`E3Relaxer` is the screening API (checkpoints, atom budgets, size-sorted streaming, results in
input order) under ``e3relax predict``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from .data import batch_from_arrays, structure_arrays, with_geometry
from .model import E3Relax
from .ops.checks import check_batch


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

    ``trajectory`` holds one structure per layer (the last is ``final_structure``). ``confidence``
    is the change the last layer still made: ``last_layer_max_move`` (Å, largest atom move) and
    ``last_layer_cell_change`` (Å, largest cell-entry change); small values mean the layers converged.
    Fields read as ``result.final_structure`` or ``result["final_structure"]``.
    """

    id: str
    input: Any
    final_structure: Any = None
    trajectory: list = field(default_factory=list)
    confidence: dict = field(default_factory=dict)
    error: str = ""

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
    """

    def __init__(self, model: E3Relax, metadata: dict | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, on_unknown_element: str = "error"):
        if on_unknown_element not in ("error", "warn"):
            raise ValueError(f"on_unknown_element must be 'error' or 'warn', got {on_unknown_element!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.metadata = metadata or {}
        self.elements = set(self.metadata.get("elements") or [])
        self.on_unknown_element = on_unknown_element

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

        model, metadata = load_model(resolve_model_path(name_or_path), backend=backend)
        return cls(model, metadata, device=device, **kwargs)

    # ----------------------------------------------------------------------------------------------
    def _prepare(self, structure_id: str, structure: Any):
        arrays = _validated_arrays(self.model, structure, structure_id)
        if self.elements:
            unknown = sorted({int(z) for z in arrays[1]} - self.elements)
            if unknown:
                from pymatgen.core import Element

                symbols = ", ".join(Element.from_Z(z).symbol for z in unknown)
                message = (f"structure {structure_id!r}: field 'species' holds {symbols}, not seen in training "
                           "(on_unknown_element='warn' relaxes it anyway)")
                if self.on_unknown_element == "error":
                    raise ValueError(message)
                warnings.warn(message, stacklevel=3)
        return arrays

    @torch.no_grad()
    def _run(self, items: list[tuple[RelaxResult, tuple]]) -> None:
        arrays = [a for _, a in items]
        batch = batch_from_arrays(arrays, [r.id for r, _ in items], dtype=torch.float64,
                                  num_elements=self.model.num_elements)
        pos_layers, cell_layers = self.model(*batch.to(self.device, self.dtype).tensors())
        pos_layers, cell_layers = pos_layers.double().cpu(), cell_layers.double().cpu()
        ptr = batch.ptr
        for b, (result, _) in enumerate(items):
            a0, a1 = int(ptr[b]), int(ptr[b + 1])
            result.trajectory = [with_geometry(result.input, pos_layers[k, a0:a1], cell_layers[k, b])
                                 for k in range(pos_layers.shape[0])]
            result.final_structure = result.trajectory[-1]
            previous_pos = pos_layers[-2, a0:a1] if pos_layers.shape[0] > 1 else batch.pos[a0:a1]
            previous_cell = cell_layers[-2, b] if cell_layers.shape[0] > 1 else batch.cell[b]
            result.confidence = {
                "last_layer_max_move": float((pos_layers[-1, a0:a1] - previous_pos).norm(dim=1).max())
                if a1 > a0 else 0.0,
                "last_layer_cell_change": float((cell_layers[-1, b] - previous_cell).abs().max()),
            }

    def relax(self, structure: Any, structure_id: str = "0") -> RelaxResult:
        """Relax one Structure or Atoms (not modified); invalid input raises ``ValueError``."""
        result = RelaxResult(structure_id, structure)
        self._run([(result, self._prepare(structure_id, structure))])
        return result

    def relax_many(self, structures: Iterable[Any], max_atoms_per_batch: int = 4096,
                   max_structures_per_batch: int = 256, window: int = 1024,
                   ids: Iterable[str] | None = None) -> Iterator[RelaxResult]:
        """Relax any iterable of Structures/Atoms (or ``(id, structure)`` pairs when ``ids`` is None and
        items are tuples), streamed: ``window`` inputs at a time are sorted by size and packed into
        batches of at most ``max_atoms_per_batch`` atoms (a larger structure goes alone); results come
        back in input order. A structure that fails validation yields a result with ``error`` set.
        """
        if max_atoms_per_batch < 1 or max_structures_per_batch < 1 or window < 1:
            raise ValueError("max_atoms_per_batch, max_structures_per_batch and window must be >= 1")
        id_iter = iter(ids) if ids is not None else None
        pending: list[tuple[RelaxResult, tuple | None]] = []

        def flush() -> Iterator[RelaxResult]:
            good = sorted((item for item in pending if item[1] is not None), key=lambda item: len(item[1][1]))
            batch: list = []
            atoms = 0
            for item in good:
                n = len(item[1][1])
                if batch and (atoms + n > max_atoms_per_batch or len(batch) >= max_structures_per_batch):
                    self._run(batch)
                    batch, atoms = [], 0
                batch.append(item)
                atoms += n
            if batch:
                self._run(batch)
            yield from (result for result, _ in pending)
            pending.clear()

        for index, item in enumerate(structures):
            if id_iter is not None:
                structure_id, structure = str(next(id_iter)), item
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                structure_id, structure = item
            else:
                structure_id, structure = str(index), item
            result = RelaxResult(structure_id, structure)
            arrays = None
            try:
                arrays = self._prepare(structure_id, structure)
            except (ValueError, TypeError) as err:
                result.error = str(err)
            pending.append((result, arrays))
            if len(pending) >= window:
                yield from flush()
        yield from flush()
