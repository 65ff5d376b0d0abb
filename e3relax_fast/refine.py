"""Predict, then refine: hand a structure to any ASE calculator with FIRE + ``FrechetCellFilter``.

E3Relax gives a one-shot pre-relaxation; a potential or DFT code then finishes the job. The figure of
merit is the number of optimiser steps the calculator still needs, from the prediction versus from the
unrelaxed input (the paper's residual-ionic-steps experiment).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

#: Calculators known by a short name on the command line; anything else is ``module:Class``.
CALCULATORS = {"emt": "ase.calculators.emt:EMT"}


@dataclass
class RefineResult:
    structure: Any  # the refined structure, of the input's type
    steps: int  # FIRE steps taken
    converged: bool  # max force (and stress) below fmax within the step limit
    energy: float  # eV, of the final structure


def calculator_factory(spec: str) -> Callable[[], Any]:
    """A zero-argument factory of an ASE calculator from ``"emt"`` or ``"package.module:Class"``."""
    target = CALCULATORS.get(spec.lower(), spec)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ValueError(f"--refine {spec!r}: give a known name ({', '.join(CALCULATORS)}) or module:Class")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--refine {spec!r}: cannot import {target} ({err})") from None


def refine(structure: Any, calculator: Any, fmax: float = 0.05, steps: int = 500) -> RefineResult:
    """Relax ``structure`` (pymatgen Structure or ASE Atoms; not modified) with ``calculator`` by FIRE
    on positions and cell (``FrechetCellFilter``) until every force and stress component is below
    ``fmax`` (eV/Å) or ``steps`` steps were taken. One BLAS thread while it runs: the filter's tiny
    linear solves are ~10x slower with threaded OpenBLAS."""
    from ase import Atoms
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from threadpoolctl import threadpool_limits

    is_atoms = isinstance(structure, Atoms)
    if is_atoms:
        atoms = structure.copy()
    else:
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    with threadpool_limits(limits=1, user_api="blas"):
        optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
        converged = bool(optimizer.run(fmax=fmax, steps=steps))
        energy = float(atoms.get_potential_energy())
    taken = int(optimizer.get_number_of_steps())
    atoms.calc = None
    if is_atoms:
        out = atoms
    else:
        from pymatgen.io.ase import AseAtomsAdaptor

        out = AseAtomsAdaptor.get_structure(atoms)
    return RefineResult(out, taken, converged, energy)
