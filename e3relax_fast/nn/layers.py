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


class ReducedPrecisionLinear(nn.Module):
    """A trained Linear whose matrix product runs in a narrower float type (bfloat16) for inference:
    the input is rounded to it, the product accumulates in float32 (oneDNN; AMX or AVX512-BF16 where
    the CPU has them), and the result returns to the input's dtype before the bias is added in it.
    Inputs [..., in_features] -> [..., out_features]. No gradients: built from a trained layer."""

    def __init__(self, source: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = source.in_features, source.out_features
        self.weight = nn.Parameter(source.weight.detach().to(dtype).clone(), requires_grad=False)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        out = functional.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out


class MixedPrecisionLinear(nn.Linear):
    """A Linear that trains with its product in bfloat16: input and weight rounded to bfloat16, the
    product accumulated in float32, the result and its gradients back in the input's dtype; the
    weights stay float32 (the optimiser's master copy). Same parameters and state-dict keys as the
    Linear it was made from (:func:`train_matmuls_in_bfloat16`)."""

    def forward(self, x: Tensor) -> Tensor:
        out = functional.linear(x.to(torch.bfloat16), self.weight.to(torch.bfloat16)).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)


class ReducedPrecisionMLP(nn.Module):
    """A trained :class:`MLP` with both products in a narrower float type (bfloat16) for inference: the
    hidden activation stays in that type between them (one rounding of the input, one return of the
    output to the input's dtype), biases are added inside the products. [..., in] -> [..., out]."""

    def __init__(self, source: "MLP", dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        first, second = source[0], source[2]
        self.activate_output = len(source) > 3
        self.weight1 = nn.Parameter(first.weight.detach().to(dtype).clone(), requires_grad=False)
        self.bias1 = nn.Parameter(first.bias.detach().to(dtype).clone(), requires_grad=False)
        self.weight2 = nn.Parameter(second.weight.detach().to(dtype).clone(), requires_grad=False)
        self.bias2 = nn.Parameter(second.bias.detach().to(dtype).clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        hidden = functional.silu(functional.linear(x.to(self.weight1.dtype), self.weight1, self.bias1)) * (1.0 / 0.6)
        out = functional.linear(hidden, self.weight2, self.bias2).to(x.dtype)
        if self.activate_output:
            out = functional.silu(out) * (1.0 / 0.6)
        return out


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

