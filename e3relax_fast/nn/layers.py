"""Small building blocks: the scaled SiLU, two-layer MLPs, channel norms of vector features."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional


class ScaledSiLU(nn.Module):
    """``SiLU(x) / 0.6``, which keeps unit-variance inputs near unit variance (PaiNN/OCP)."""

    def forward(self, x: Tensor) -> Tensor:
        return functional.silu(x) * (1.0 / 0.6)


def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A Linear with PyTorch's default initialisation (uniform, bound 1/sqrt(fan_in)).

    Xavier initialisation, as in OCP's PaiNN, makes the untrained E3Relax stack blow up layer by layer
    (the lattice and vector residuals compound: 1e10 Å moves after four layers at F = 512); the
    default keeps the untrained model's moves near 1e-3 Å.
    """
    return nn.Linear(in_features, out_features, bias=bias)


class MLP(nn.Sequential):
    """Linear -> ScaledSiLU -> Linear, optionally followed by another ScaledSiLU."""

    def __init__(self, in_features: int, hidden: int, out_features: int, activate_output: bool = False):
        modules = [linear(in_features, hidden), ScaledSiLU(), linear(hidden, out_features)]
        if activate_output:
            modules.append(ScaledSiLU())
        super().__init__(*modules)


def channel_norm(vectors: Tensor) -> Tensor:
    """Per-channel norm over the spatial axis: [..., 3, F] -> [..., F], ``sqrt(sum_d v_d^2 + 1e-8)``."""
    return torch.sqrt((vectors * vectors).sum(dim=-2) + 1e-8)


def safe_norm(vectors: Tensor) -> Tensor:
    """Euclidean norm over the last axis with the squared norm clamped at 1e-8 (no NaN gradient at 0)."""
    return torch.sqrt((vectors * vectors).sum(dim=-1).clamp(min=1e-8))

