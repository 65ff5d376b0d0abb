"""Layers of E3Relax: radial basis, MLPs and the equivariant atom/lattice blocks."""

from .blocks import AtomMessageBlock, AtomUpdateBlock, LatticeNodeBlock, PositionUpdateBlock, StrainBlock
from .layers import MLP, ScaledSiLU, channel_norm, linear, safe_norm
from .radial import GaussianRBF, PolynomialEnvelope

__all__ = [
    "AtomMessageBlock",
    "AtomUpdateBlock",
    "GaussianRBF",
    "LatticeNodeBlock",
    "MLP",
    "PolynomialEnvelope",
    "PositionUpdateBlock",
    "ScaledSiLU",
    "StrainBlock",
    "channel_norm",
    "linear",
    "safe_norm",
]
