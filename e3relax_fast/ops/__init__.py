"""Registered ops, backend dispatch and their pure-PyTorch references.

Public: :func:`radius_graph`, :func:`vector_message`, :func:`radial_filter`, :func:`radial_vector_message`,
:func:`edge_vectors`, :func:`check_batch`,
each with ``backend="auto" | "torch" | "cpp" | "cuda" | "triton"`` where a fast kernel exists.
"""

from . import _backend, _library
from .checks import check_batch
from .geometry import atom_structure_index, edge_vectors
from .message_passing import MessageGraph, message_graph, register_fake_kernels, vector_message, vector_message_reference
from .neighbors import neighbors
from .radial_filter import gaussian_basis, polynomial_envelope, radial_filter, radial_filter_reference
from .radial_filter import register_fake_kernels as _register_radial_filter_fakes
from .radial_message import radial_vector_message, radial_vector_message_reference
from .radial_message import register_fake_kernels as _register_radial_message_fakes
from .radius_graph import radius_graph, radius_graph_reference, register_fake_kernel

# Load the op library now (a dlopen; nothing is compiled) so that torch.ops.e3relax.* exist after
# `import e3relax_fast`; a missing library is reported on first use, never raised.
if _library.status().loaded:
    register_fake_kernel()
    register_fake_kernels()
    _register_radial_filter_fakes()
    _register_radial_message_fakes()

BACKENDS = _backend.BACKENDS
backend_report = _backend.report
library_status = _library.status

__all__ = [
    "BACKENDS",
    "atom_structure_index",
    "backend_report",
    "check_batch",
    "edge_vectors",
    "library_status",
    "neighbors",
    "MessageGraph",
    "gaussian_basis",
    "polynomial_envelope",
    "radial_filter",
    "radial_filter_reference",
    "radial_vector_message",
    "radial_vector_message_reference",
    "message_graph",
    "radius_graph",
    "radius_graph_reference",
    "vector_message",
    "vector_message_reference",
]
