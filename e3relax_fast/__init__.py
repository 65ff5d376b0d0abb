"""e3relax_fast: one-shot crystal structure relaxation with E3Relax on compiled kernels.

>>> import e3relax_fast as e3
>>> model = e3.E3Relax(e3.E3RelaxConfig.small())
>>> pos_layers, cell_layers = model(pos, z, cell, pbc, ptr)   # doctest: +SKIP
"""

from . import ops
from ._version import __version__
from .model import E3Relax, E3RelaxConfig
from .ops import neighbors
from .allocator import tune_cpu_allocator
from .relax import E3Relaxer, RelaxResult

__all__ = ["E3Relax", "E3RelaxConfig", "E3Relaxer", "RelaxResult", "__version__", "neighbors", "ops",
           "tune_cpu_allocator"]
