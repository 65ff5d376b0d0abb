"""The edge filter of E3Relax on its Gaussian radial basis: ``out = bias + W phi(d)``.

``phi`` is the basis of ``nn.GaussianRBF`` (``M`` Gaussians on ``t = d / cutoff`` times a polynomial
envelope). The reference materialises ``phi`` as an ``[E, M]`` tensor and multiplies by ``W``; the fused
kernel (``torch.ops.e3relax.radial_filter``) never forms it and sums only the basis functions within 9
widths of each distance in float64 (19 terms; the others are below ``exp(-40.5) = 2.6e-18`` of the
largest, under float64 rounding) and 6 widths in float32 (13 terms; the others below ``exp(-18) = 1.5e-8``,
under float32 rounding), so the result equals the reference to rounding. The basis and the filter were about two
thirds of E3Relax's time on the CPU (128 exponentials and a 128-wide matrix product per edge and layer).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn



def polynomial_envelope(t: Tensor, exponent: int) -> Tensor:
    """``1 - (p+1)(p+2)/2 t^p + p(p+2) t^(p+1) - p(p+1)/2 t^(p+2)`` for ``t < 1``, else 0 (p = exponent):
    value, slope and curvature vanish at ``t = 1``."""
    p = float(exponent)
    a, b, c = -(p + 1.0) * (p + 2.0) / 2.0, p * (p + 2.0), -p * (p + 1.0) / 2.0
    value = 1.0 + t.pow(exponent) * (a + t * (b + c * t))
    return torch.where(t < 1.0, value, torch.zeros_like(t))


def gaussian_basis(distance: Tensor, cutoff: float, num_basis: int, envelope_exponent: int) -> Tensor:
    """``phi_m(d) = env(d / r_c) exp(-(d / r_c - m / (M-1))^2 / (2 / (M-1)^2))``: distances [...] (Å)
    -> features [..., M]. TorchScript-compatible."""
    t = (distance / cutoff).unsqueeze(-1)
    envelope = polynomial_envelope(t, envelope_exponent)
    centers = torch.linspace(0.0, 1.0, num_basis, dtype=t.dtype, device=t.device)
    width = 1.0 / (num_basis - 1)
    coefficient = -0.5 / (width * width)
    features = t - centers  # [..., M]: the one allocation of this size
    if torch.is_grad_enabled() and distance.requires_grad:
        return envelope * torch.exp(coefficient * features.square())
    # Inference: the same arithmetic in place, in one buffer.
    return features.square_().mul_(coefficient).exp_().mul_(envelope)


def radial_filter_reference(distance: Tensor, weight: Tensor, bias: Tensor, cutoff: float,
                            envelope_exponent: int) -> Tensor:
    """``bias + W phi(d)`` through the materialised basis. TorchScript-compatible.

    Args:
        distance: [E] edge lengths (Å).
        weight: [O, M] filter weights (``nn.Linear`` layout; M basis functions).
        bias: [O].
        cutoff: r_c of the basis (Å). envelope_exponent: p of the envelope.

    Returns:
        [E, O].
    """
    features = gaussian_basis(distance, cutoff, weight.shape[1], envelope_exponent)
    return torch.nn.functional.linear(features, weight, bias)


class ReferenceRadialFilter(nn.Module):
    """``forward(distance [E], weight [O,M], bias [O]) -> [E,O]`` by :func:`radial_filter_reference`,
    with the basis cutoff (Å) and envelope exponent fixed."""

    def __init__(self, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_exponent = int(envelope_exponent)

    def forward(self, distance: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return radial_filter_reference(distance, weight, bias, self.cutoff, self.envelope_exponent)


class CompiledRadialFilter(ReferenceRadialFilter):
    """As :class:`ReferenceRadialFilter`, by ``torch.ops.e3relax.radial_filter`` (banded and fused; CPU
    kernel, C++ autograd)."""

    def forward(self, distance: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return torch.ops.e3relax.radial_filter(distance, weight, bias, self.cutoff, self.envelope_exponent)


def register_fake_kernels() -> None:
    """Output shapes of the radial_filter kernels for FakeTensor tracing (torch.compile, export)."""
    if getattr(register_fake_kernels, "done", False) or not hasattr(torch.ops.e3relax, "radial_filter_forward"):
        return

    @torch.library.register_fake("e3relax::radial_filter_forward")
    def _(distance, weight, bias, cutoff, envelope_exponent):
        return distance.new_empty((distance.shape[0], weight.shape[0]))

    @torch.library.register_fake("e3relax::radial_filter_backward")
    def _(grad_out, distance, weight, cutoff, envelope_exponent):
        return torch.empty_like(distance), torch.empty_like(weight), weight.new_empty((weight.shape[0],))

    register_fake_kernels.done = True  # type: ignore[attr-defined]
