"""jobflow Makers: a one-shot E3Relax pre-relaxation as a job in any jobflow or atomate2 flow.

``E3RelaxMaker().make(structure)`` is a job whose output holds the predicted ``structure`` (a pymatgen
``Structure``), so a following job takes ``job.output.structure``, exactly as it would take the output
of atomate2's relax jobs::

    pre = E3RelaxMaker().make(structure)
    dft = SomeDftMaker().make(pre.output.structure)
    flow = Flow([pre, dft])

``E3RelaxBatchMaker().make(structures)`` relaxes many in one job through ``E3Relaxer.relax_many``
(batched; a structure that fails gets ``None`` and its error, the others go on).

Needs the optional extra ``workflows`` (``pip install "e3relax_fast[workflows]"``: jobflow). The
relaxer of a model is loaded once per process and reused by every job that names it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

try:
    from jobflow import Maker, job
except ImportError as err:  # pragma: no cover - exercised only where the extra is missing
    raise ImportError("e3relax_fast.workflows needs jobflow: pip install 'e3relax_fast[workflows]'") from err

from ._version import __version__
from .relax import BatchBudget, E3Relaxer


@functools.lru_cache(maxsize=4)
def _relaxer(model: str | None, device: str | None, options: tuple) -> E3Relaxer:
    return E3Relaxer.from_pretrained(model, device=device, **dict(options))


def _model_label(model: str | None) -> str:
    from .model.pretrained import DEFAULT_MODEL

    return model or DEFAULT_MODEL


def _result_document(result: Any, model: str | None) -> dict[str, Any]:
    """The output of one structure: predicted structure, confidence, warning, provenance."""
    return {
        "structure": result.final_structure,
        "input_structure": result.input,
        "confidence": dict(result.confidence),
        "warning": result.warning,
        "error": result.error,
        "model": _model_label(model),
        "e3relax_fast_version": __version__,
    }


@dataclass
class E3RelaxMaker(Maker):
    """A job that predicts the relaxed structure of one pymatgen ``Structure`` in one forward pass.

    Args:
        name: the job's name.
        model: a shipped model's name or a checkpoint / exported artifact path (``None``: the shipped
            default, as ``E3Relaxer.from_pretrained``).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        relaxer_kwargs: further ``E3Relaxer`` options (``on_overlap``, ``matmul_precision``, ...).

    The output is a dict: ``structure`` (the prediction, or the input geometry where the prediction
    was refused: ``warning`` says why), ``input_structure``, ``confidence``, ``warning``, ``model``
    and ``e3relax_fast_version``. An invalid structure fails the job with the reason.
    """

    name: str = "e3relax pre-relax"
    model: str | None = None
    device: str | None = None
    relaxer_kwargs: dict = field(default_factory=dict)

    @job
    def make(self, structure: Any) -> dict[str, Any]:
        relaxer = _relaxer(self.model, self.device, tuple(sorted(self.relaxer_kwargs.items())))
        return _result_document(relaxer.relax(structure), self.model)


@dataclass
class E3RelaxBatchMaker(Maker):
    """A job that predicts many structures at once (``E3Relaxer.relax_many``; fields as
    :class:`E3RelaxMaker`, plus ``max_atoms_per_batch``).

    The output is a dict: ``structures`` (one per input, in input order; ``None`` where the structure
    failed), ``results`` (one :class:`E3RelaxMaker` output each), ``failed`` (count), ``model`` and
    ``e3relax_fast_version``.
    """

    name: str = "e3relax pre-relax batch"
    model: str | None = None
    device: str | None = None
    max_atoms_per_batch: int = 4096
    relaxer_kwargs: dict = field(default_factory=dict)

    @job
    def make(self, structures: list) -> dict[str, Any]:
        relaxer = _relaxer(self.model, self.device, tuple(sorted(self.relaxer_kwargs.items())))
        results = [_result_document(r, self.model)
                   for r in relaxer.relax_many(list(structures), budget=BatchBudget(max_atoms=self.max_atoms_per_batch))]
        return {"structures": [r["structure"] if not r["error"] else None for r in results], "results": results,
                "failed": sum(bool(r["error"]) for r in results), "model": _model_label(self.model),
                "e3relax_fast_version": __version__}
