"""The message step of E3Relax with its edge filter fused in, for inference.

``radial_vector_message(phi, distance, weight, bias, ...) == vector_message(phi, radial_filter(distance,
weight, bias, ...), ...)``: the compiled kernel computes each edge's filter ``w_e = bias + W phi(d_e)``
channel block by channel block in registers and uses it at once, so the ``[E, 3F]`` filter tensor (the
largest of a layer: 1.2 GB for 190k edges at F = 512) is never written nor read back. It performs the
same operations in the same order as the two ops: its AVX2 and baseline builds equal them bit for bit;
its AVX-512 build fuses multiply-adds and differs from them by rounding only.

It has no backward: training runs :func:`radial_filter` and :func:`vector_message`, which do.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .vector_message import MessageGraph, message_graph_unchecked, vector_message_reference
from .radial_filter import radial_filter_reference


def radial_vector_message_reference(phi: Tensor, distance: Tensor, weight: Tensor, bias: Tensor, cutoff: float,
                                    envelope_exponent: int, vec: Tensor, unit: Tensor,
                                    edge_index: Tensor) -> Tuple[Tensor, Tensor]:
    """The two references in turn. TorchScript-compatible.

    Args:
        phi: [N, 3F] projected node scalars.
        distance: [E] edge lengths (Å).
        weight: [3F, M] edge-filter weights on the M Gaussians; bias: [3F].
        cutoff: r_c of the Gaussian basis (Å). envelope_exponent: p of its envelope.
        vec: [N, 3, F] node vector features. unit: [E, 3] edge unit vectors.
        edge_index: [2, E] (source j, target i), sorted by target.

    Returns:
        dh [N, F], dvec [N, 3, F].
    """
    w = radial_filter_reference(distance, weight, bias, cutoff, envelope_exponent)
    return vector_message_reference(phi, w, vec, unit, edge_index)


class ReferenceRadialVectorMessage(nn.Module):
    """``forward(phi, distance, weight, bias, vec, unit, edge_index, message_graph) -> (dh [N,F], dvec [N,3,F])`` by
    :func:`radial_vector_message_reference` (``message_graph`` ignored), with the basis settings fixed."""

    needs_message_graph = False  # whether forward walks the CSR form (the model finds it once per batch)

    def __init__(self, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_exponent = int(envelope_exponent)

    def forward(self, phi: Tensor, distance: Tensor, weight: Tensor, bias: Tensor, vec: Tensor, unit: Tensor,
                edge_index: Tensor, message_graph: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        return radial_vector_message_reference(phi, distance, weight, bias, self.cutoff, self.envelope_exponent,
                                               vec, unit, edge_index)


class CompiledRadialVectorMessage(ReferenceRadialVectorMessage):
    """As :class:`ReferenceRadialVectorMessage`, by ``torch.ops.e3relax.radial_vector_message`` (CPU kernel;
    no backward, so it refuses inputs that require grad under autograd)."""

    needs_message_graph = True  # whether forward walks the CSR form (the model finds it once per batch)

    def forward(self, phi: Tensor, distance: Tensor, weight: Tensor, bias: Tensor, vec: Tensor, unit: Tensor,
                edge_index: Tensor, message_graph: Optional[MessageGraph]) -> Tuple[Tensor, Tensor]:
        if torch.is_grad_enabled() and (phi.requires_grad or distance.requires_grad or weight.requires_grad
                                        or bias.requires_grad or vec.requires_grad or unit.requires_grad):
            raise ValueError("radial_vector_message has no backward (inference only): under autograd, call "
                             "radial_filter and vector_message, or run under torch.no_grad()")
        if message_graph is None:
            message_graph = message_graph_unchecked(edge_index, vec.shape[0])
        return torch.ops.e3relax.radial_vector_message(phi, distance, weight, bias, self.cutoff,
                                                       self.envelope_exponent, vec, unit, message_graph[0], message_graph[1])


def register_fake_kernels() -> None:
    """Output shapes for FakeTensor tracing (torch.compile, export)."""
    if getattr(register_fake_kernels, "done", False) or not hasattr(torch.ops.e3relax, "radial_vector_message"):
        return

    @torch.library.register_fake("e3relax::radial_vector_message")
    def _(phi, distance, weight, bias, cutoff, envelope_exponent, vec, unit, rowptr, source):
        return vec.new_empty((vec.shape[0], vec.shape[2])), torch.empty_like(vec)

    register_fake_kernels.done = True  # type: ignore[attr-defined]
