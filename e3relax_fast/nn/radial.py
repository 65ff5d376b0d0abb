"""Radial basis of E3Relax: Gaussians on [0, 1] of the scaled distance, times a polynomial envelope."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``1 - (p+1)(p+2)/2 t^p + p(p+2) t^(p+1) - p(p+1)/2 t^(p+2)`` for t < 1, else 0.

    For p = 5 this is ``1 - 21 t^5 + 35 t^6 - 15 t^7``; value, slope and curvature vanish at t = 1.
    """

    def __init__(self, exponent: int = 5):
        super().__init__()
        if exponent < 1:
            raise ValueError(f"envelope exponent must be >= 1, got {exponent}")
        p = float(exponent)
        self.exponent = exponent
        self.a = -(p + 1.0) * (p + 2.0) / 2.0
        self.b = p * (p + 2.0)
        self.c = -p * (p + 1.0) / 2.0

    def forward(self, t: Tensor) -> Tensor:
        t_p = t.pow(self.exponent)
        value = 1.0 + t_p * (self.a + t * (self.b + self.c * t))
        return torch.where(t < 1.0, value, torch.zeros_like(t))


class GaussianRBF(nn.Module):
    """``phi_m(d) = env(d / r_c) exp(-(d / r_c - m / (M-1))^2 / (2 / (M-1)^2))`` for m = 0..M-1.

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
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(0.0, 1.0, num_basis), persistent=False)
        width = 1.0 / (num_basis - 1)
        self.coefficient = -0.5 / (width * width)
        self.envelope = PolynomialEnvelope(envelope_exponent)

    def forward(self, distance: Tensor) -> Tensor:
        t = (distance / self.cutoff).unsqueeze(-1)
        envelope = self.envelope(t)
        features = t - self.centers.to(t.dtype)  # [..., M]: the one allocation of this size
        if torch.is_grad_enabled() and distance.requires_grad:
            return envelope * torch.exp(self.coefficient * features.square())
        # Inference: the same arithmetic in place, one buffer instead of five passes allocating four
        # (this basis was a third of screening time on the CPU).
        return features.square_().mul_(self.coefficient).exp_().mul_(envelope)
