"""Streaming many structures through a relaxer: windows prepared in threads, size-sorted batches within
budgets, results in input order, each optionally refined by a calculator.

Used by :meth:`E3Relaxer.relax_many` through the relaxer's public ``prepare`` and ``run_batch``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..data.batching import pack_greedy
from ..refine import refine as refine_structure
from .result import PreparedInput, RelaxResult

if TYPE_CHECKING:  # the relaxer imports this module; the type only names it
    from .relaxer import E3Relaxer


@dataclass(frozen=True)
class BatchBudget:
    """How a stream is cut into batches: at most ``max_atoms`` atoms, ``max_structures`` structures and
    ``max_edges`` edges (0: no edge budget) a batch; ``window`` inputs prepared at a time by
    ``num_workers`` threads (the next window while the model runs this one). A structure over a budget
    goes alone."""

    max_atoms: int = 4096
    max_structures: int = 256
    max_edges: int = 0
    window: int = 256
    num_workers: int = 1

    def __post_init__(self) -> None:
        if min(self.max_atoms, self.max_structures, self.window, self.num_workers) < 1 or self.max_edges < 0:
            raise ValueError("max_atoms, max_structures, window and num_workers must be >= 1, max_edges >= 0")


@dataclass(frozen=True)
class Refinement:
    """A relaxation of each prediction by a calculator, FIRE + ``FrechetCellFilter`` to ``fmax`` eV/Å in at
    most ``steps`` steps (:func:`e3relax_fast.refine.refine`). ``calculator`` is an ASE calculator, or a
    class or zero-argument function making one: it is then called once, on first use, and the calculator
    reused for every structure of the stream (an ML potential loads its weights once)."""

    calculator: Any
    fmax: float = 0.05
    steps: int = 500

    @classmethod
    def of(cls, refine: "Refinement | Any") -> "Refinement | None":
        """A :class:`Refinement` as given, or one with the defaults around a bare calculator (None: none)."""
        return refine if refine is None or isinstance(refine, Refinement) else cls(refine)


def identified(structures: Iterable[Any], ids: Iterable[str] | None) -> Iterator[tuple[str, Any]]:
    """``(id, structure)`` pairs: from ``ids``, from ``(str, structure)`` items, else the position."""
    id_iter = iter(ids) if ids is not None else None
    for index, item in enumerate(structures):
        if id_iter is not None:
            yield str(next(id_iter)), item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            yield item
        else:
            yield str(index), item


class StreamedRelaxation:
    """The machinery of :meth:`E3Relaxer.relax_many`, in four steps: windows of inputs are prepared
    (validated, graphs built) in a thread pool one window ahead; ``pack`` sorts a window by size and
    cuts it into batches within the budget (``data/batching.py``); each window's batches run at once
    except its last, partly filled one, which is topped up by the next window (``advance``); ``emit``
    refines and yields a window's results in input order once all of them are done.

    An entry is ``(result, prepared)`` for a valid input, or the bare ``result`` carrying its error.
    """

    def __init__(self, relaxer: "E3Relaxer", budget: BatchBudget, refinement: Refinement | None):
        self.relaxer = relaxer
        self.budget = budget
        self.refinement = refinement
        self.calculator: Any = None
        self.ahead: list[list] = []  # futures of the windows being prepared
        self.waiting: list[list] = []  # prepared windows whose results are not all out yet
        self.carried: list = []  # prepared entries not yet run

    def prepare(self, structure_id: str, structure: Any) -> "RelaxResult | tuple[RelaxResult, PreparedInput]":
        result = RelaxResult(structure_id, structure)
        try:
            return result, self.relaxer.prepare(structure_id, structure)
        except (ValueError, TypeError) as err:
            result.error = str(err)
            return result

    def pack(self, entries: list) -> list[list]:
        """Size-sorted entries cut into batches within the atom, structure and edge budgets."""
        entries = sorted(entries, key=lambda p: p[1].size)
        groups = pack_greedy([p[1].size for p in entries], self.budget.max_structures, self.budget.max_atoms,
                             [p[1].num_edges for p in entries], self.budget.max_edges)
        return [[entries[k] for k in group] for group in groups]

    def emit(self, entries: list) -> Iterator[RelaxResult]:
        for entry in entries:
            result = entry[0] if isinstance(entry, tuple) else entry
            if self.refinement is not None and result.ok:
                self.refine_one(result)
            yield result

    def refine_one(self, result: RelaxResult) -> None:
        """Refine one prediction; a calculator that fails on it (an element it lacks, a diverging
        optimiser) leaves the prediction as the result, with the failure in its warning (``refined``
        stays None), and the stream carries on."""
        given = self.refinement.calculator
        try:
            if self.calculator is None:  # a class or factory is called once; a calculator taken as it is
                self.calculator = given() if isinstance(given, type) or not hasattr(given, "calculate") else given
            result.refined = refine_structure(result.final_structure, self.calculator, self.refinement.fmax,
                                              self.refinement.steps)
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
            self.relaxer.run_batch(batch)
        while self.waiting and all(_result_of(p).done for p in self.waiting[0]):
            yield from self.emit(self.waiting.pop(0))

    def run(self, items: Iterator[tuple[str, Any]]) -> Iterator[RelaxResult]:
        window = self.budget.window
        with ThreadPoolExecutor(max_workers=self.budget.num_workers) as pool:
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


def _result_of(entry: Any) -> RelaxResult:
    return entry[0] if isinstance(entry, tuple) else entry
