"""Scalar-vector message aggregation of one E3Relax (PaiNN-style) message step.

For an edge e = (j -> i) with ``[a, b, c]_e = split3(phi[j] * w[e]) / sqrt(3)``::

    dh[i]   = sum_e c_e
    dvec[i] = (1 / sqrt(F)) sum_e (a_e * vec[j] + unit_e (x) b_e)

The fused kernels compute this without materialising the per-edge ``[E, 3F]`` and ``[E, 3, F]``
message tensors; the reference below does materialise them (``index_select`` + ``index_add_``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _backend


def vector_message_reference(phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor,
                             edge_index: Tensor) -> Tuple[Tensor, Tensor]:
    """Gather, multiply, scatter-add. TorchScript-compatible.

    Args:
        phi: [N, 3F] projected node scalars.
        w: [E, 3F] projected radial features of each edge.
        vec: [N, 3, F] node vector features.
        unit: [E, 3] edge unit vectors.
        edge_index: [2, E] (source j, target i).

    Returns:
        dh [N, F], dvec [N, 3, F].
    """
    num_nodes, channels = vec.shape[0], vec.shape[2]
    source, target = edge_index[0], edge_index[1]
    message = phi.index_select(0, source) * w * (1.0 / math.sqrt(3.0))
    gate, direction, scalar = torch.split(message, channels, dim=1)
    dh = torch.zeros((num_nodes, channels), dtype=phi.dtype, device=phi.device).index_add_(0, target, scalar)
    vector_message = gate.unsqueeze(1) * vec.index_select(0, source) + unit.unsqueeze(2) * direction.unsqueeze(1)
    dvec = torch.zeros((num_nodes, 3, channels), dtype=vec.dtype, device=vec.device)
    dvec = dvec.index_add_(0, target, vector_message) * (1.0 / math.sqrt(float(channels)))
    return dh, dvec


_backend.register(_backend.OpBackends("vector_message", vector_message_reference, "vector_message"))


@torch.jit.unused
def _dispatch_vector_message(phi: Tensor, w: Tensor, vec: Tensor, unit: Tensor, edge_index: Tensor,
                             backend: str, csr: Optional[Tuple[Tensor, Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
    name, impl = _backend.select("vector_message", phi.device, backend)
    if name == "torch":
        return impl(phi, w, vec, unit, edge_index)
    raise NotImplementedError(f"vector_message backend {name}")  # compiled kernels arrive with issue 4


def vector_message(
    phi: Tensor,
    w: Tensor,
    vec: Tensor,
    unit: Tensor,
    edge_index: Tensor,
    backend: str = "auto",
    csr: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """Message aggregation; shapes as :func:`vector_message_reference`.

    ``edge_index`` must be sorted by target (as :func:`radius_graph` returns it). ``csr`` may carry a
    precomputed ``(rowptr, source, transpose_perm)`` for the fused kernels to reuse across layers;
    the reference ignores it. Under TorchScript the reference runs.
    """
    if torch.jit.is_scripting():
        return vector_message_reference(phi, w, vec, unit, edge_index)
    return _dispatch_vector_message(phi, w, vec, unit, edge_index, backend, csr)
