"""Radial basis of E3Relax: Gaussians on [0, 1] of the scaled distance, times a polynomial envelope."""

from __future__ import annotations

from torch import Tensor, nn

from ..ops.radial_filter import gaussian_basis, polynomial_envelope


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``1 - (p+1)(p+2)/2 t^p + p(p+2) t^(p+1) - p(p+1)/2 t^(p+2)`` for t < 1, else 0
    (:func:`e3relax_fast.ops.polynomial_envelope`). For p = 5 this is ``1 - 21 t^5 + 35 t^6 - 15 t^7``."""

    def __init__(self, exponent: int = 5):
        super().__init__()
        if exponent < 1:
            raise ValueError(f"envelope exponent must be >= 1, got {exponent}")
        self.exponent = exponent

    def forward(self, t: Tensor) -> Tensor:
        return polynomial_envelope(t, self.exponent)


class GaussianRBF(nn.Module):
    """``phi_m(d) = env(d / r_c) exp(-(d / r_c - m / (M-1))^2 / (2 / (M-1)^2))`` for m = 0..M-1
    (:func:`e3relax_fast.ops.gaussian_basis`; the edge filter on it is fused in ``ops.radial_filter``).

    Args:
        num_basis: M Gaussians (128 in the paper).
        cutoff: r_c in Å (30 Å in the paper: much longer than the graph radius, so moving atoms
            practically never leave the basis).
        envelope_exponent: p of the polynomial envelope (5).

    Shapes: distances [...] (Å) -> features [..., M].
    """

    def __init__(self, num_basis: int = 128, cutoff: float = 30.0, envelope_exponent: int = 5):
        super().__init__()
        if num_basis < 2:
            raise ValueError(f"num_basis must be >= 2, got {num_basis}")
        if envelope_exponent < 1:
            raise ValueError(f"envelope exponent must be >= 1, got {envelope_exponent}")
        self.num_basis = num_basis
        self.cutoff = float(cutoff)
        self.envelope_exponent = envelope_exponent

    def forward(self, distance: Tensor) -> Tensor:
        return gaussian_basis(distance, self.cutoff, self.num_basis, self.envelope_exponent)
