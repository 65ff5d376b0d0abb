"""Relaxing structures with a trained model, in named parts:

- ``relaxer.py``: :class:`E3Relaxer` (prepare an input, run a batch, relax one or many, raw tensors);
- ``guards.py``: what is refused on the way in and on the way out (:class:`PredictionGuards`);
- ``stream.py``: many structures in size-sorted batches (:class:`BatchBudget`, :class:`Refinement`);
- ``result.py``: :class:`RelaxResult`, what comes back.
"""

from .guards import MAX_VOLUME_FACTOR, MIN_PREDICTED_DISTANCE, OVERLAP_POLICIES, PredictionGuards
from .relaxer import MATMUL_PRECISIONS, E3Relaxer
from .result import RelaxResult
from .stream import BatchBudget, Refinement

__all__ = ["BatchBudget", "E3Relaxer", "MATMUL_PRECISIONS", "MAX_VOLUME_FACTOR", "MIN_PREDICTED_DISTANCE",
           "OVERLAP_POLICIES", "PredictionGuards", "Refinement", "RelaxResult"]
