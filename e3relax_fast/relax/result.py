"""What the relaxer hands back (:class:`RelaxResult`) and what it keeps of an input between checking it
and running it (:class:`PreparedInput`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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

    @property
    def done(self) -> bool:
        """Whether the relaxer is finished with it: failed, or a final structure is set."""
        return bool(self.error) or self.final_structure is not None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def return_input_geometry(self) -> None:
        """Refuse the prediction: ``final_structure`` becomes a copy of the input, exactly (its cell in
        the user's basis, not mapped back from the reduced one); the prediction stays ``trajectory[-1]``."""
        self.final_structure = self.input.copy()
        self.refused = True


@dataclass
class PreparedInput:
    """An input checked and made ready for a batch (``E3Relaxer.prepare``)."""

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
