"""Registered ops, their pure-PyTorch references and the one registry that chooses among them.

Layout: ``ops/<op>.py`` holds an op's reference and its implementation modules;
``ops/registry.py`` the table of implementations and the choice (``registry.build``, read by model
blocks and by ``e3relax info``); ``ops/functional.py`` the functional forms, each with
``backend="auto" | "torch" | "cpp" | "cuda" | "triton"``: :func:`radius_graph`, :func:`vector_message`,
:func:`radial_filter`, :func:`radial_vector_message`. Also :func:`edge_vectors`, :func:`check_batch`.
"""

from . import _library, registry
from .checks import check_batch
from .functional import radial_filter, radial_vector_message, radius_graph, vector_message
from .geometry import atom_structure_index, edge_vectors
from .vector_message import (MessageGraph, check_sorted_by_target, message_graph, message_graph_unchecked,
                             vector_message_reference)
from .vector_message import register_fake_kernels as _register_vector_message_fakes
from .neighbors import neighbors
from .radial_filter import gaussian_basis, polynomial_envelope, radial_filter_reference
from .radial_filter import register_fake_kernels as _register_radial_filter_fakes
from .radial_vector_message import radial_vector_message_reference
from .radial_vector_message import register_fake_kernels as _register_radial_message_fakes
from .radius_graph import check_pair_budget, radius_graph_reference
from .radius_graph import register_fake_kernel as _register_radius_graph_fake

# Load the op library now (a dlopen; nothing is compiled) so that torch.ops.e3relax.* exist after
# `import e3relax_fast`; a missing library is reported on first use, never raised.
if _library.status().loaded:
    _register_radius_graph_fake()
    _register_vector_message_fakes()
    _register_radial_filter_fakes()
    _register_radial_message_fakes()

BACKENDS = registry.BACKENDS
backend_report = registry.report
library_status = _library.status

__all__ = [
    "BACKENDS",
    "MessageGraph",
    "atom_structure_index",
    "backend_report",
    "check_batch",
    "check_pair_budget",
    "check_sorted_by_target",
    "edge_vectors",
    "gaussian_basis",
    "library_status",
    "message_graph",
    "message_graph_unchecked",
    "neighbors",
    "polynomial_envelope",
    "radial_filter",
    "radial_filter_reference",
    "radial_vector_message",
    "radial_vector_message_reference",
    "radius_graph",
    "radius_graph_reference",
    "registry",
    "vector_message",
    "vector_message_reference",
]
