"""Running a model on structures: batches of pymatgen Structures / ASE Atoms in, the same types out.

This is the batching core under ``e3relax predict``; the full screening API (``E3Relaxer`` with atom
budgets, worker processes and checkpoints) builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from .data import batch_from_arrays, structure_arrays, with_geometry
from .model import E3Relax
from .ops.checks import check_batch


@dataclass
class Prediction:
    """The prediction for one input, or why there is none."""

    id: str
    input: Any
    final_structure: Any = None
    max_displacement: float = float("nan")  # Å, largest atom move from input to prediction
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _validated_arrays(model: E3Relax, structure: Any, structure_id: str):
    """Arrays of one structure, checked alone so that one bad input never fails its batch."""
    arrays = structure_arrays(structure, f"structure {structure_id!r}")
    pos, z, cell, pbc = (torch.from_numpy(a) for a in arrays)
    check_batch(pos, cell.unsqueeze(0), pbc.unsqueeze(0), torch.tensor([0, len(z)]), z,
                names=[structure_id], num_elements=model.num_elements)
    return arrays


@torch.no_grad()
def predict_structures(
    model: E3Relax,
    items: Iterable[tuple[str, Any]],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[Prediction]:
    """Relax ``(id, structure)`` pairs in batches of ``batch_size``, yielding one :class:`Prediction`
    per input in input order. Invalid inputs yield a Prediction with ``error`` set."""
    model = model.to(device=device, dtype=dtype).eval()
    pending: list[tuple[Prediction, Any]] = []

    def flush() -> Iterator[Prediction]:
        good = [(p, a) for p, a in pending if p.ok]
        if good:
            batch = batch_from_arrays([a for _, a in good], [p.id for p, _ in good], dtype=dtype,
                                      num_elements=model.num_elements).to(device)
            pos_layers, cell_layers = model(*batch.tensors())
            pos, cell, ptr = pos_layers[-1].double().cpu(), cell_layers[-1].double().cpu(), batch.ptr.cpu()
            for b, (prediction, _) in enumerate(good):
                start, end = int(ptr[b]), int(ptr[b + 1])
                moved = (pos[start:end] - batch.pos[start:end].double().cpu()).norm(dim=1)
                prediction.final_structure = with_geometry(prediction.input, pos[start:end], cell[b])
                prediction.max_displacement = float(moved.max())
        yield from (p for p, _ in pending)
        pending.clear()

    for structure_id, structure in items:
        prediction = Prediction(structure_id, structure)
        arrays = None
        try:
            arrays = _validated_arrays(model, structure, structure_id)
        except (ValueError, TypeError) as err:
            prediction.error = str(err)
        pending.append((prediction, arrays))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()


def untrained_model(preset: str = "paper", seed: int = 0) -> E3Relax:
    """A randomly initialised E3Relax from a named config, for demos and pipeline checks only."""
    from .model import E3RelaxConfig

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return E3Relax(E3RelaxConfig.preset(preset)).eval()
    finally:
        torch.random.set_rng_state(generator_state)

