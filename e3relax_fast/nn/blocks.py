"""The equivariant blocks of one E3Relax layer (docs/model.md, steps 1-7).

Shapes: atoms carry ``h [N, F]`` and ``vec [N, 3, F]``; lattice nodes carry ``g [B, 3, F]`` and
``lattice_vec [B, 3, 3, F]`` (structure, lattice node k, spatial axis, channel). A Linear acting on a
vector feature mixes channels only and has no bias, so it commutes with rotations.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..ops import MessageGraph, registry
from .layers import MLP, ScaledSiLU, channel_norm, linear


class LatticeNodeBlock(nn.Module):
    """All weights of lattice node k in one layer: lattice -> atom (step 1), atom -> lattice (step 5)
    and the lattice-vector increment (step 6). 5,185,536 parameters at F = 512."""

    def __init__(self, channels: int, num_rbf: int):
        super().__init__()
        f = channels
        self.channels = channels
        self.atom_filter_mlp = MLP(f, f, 3 * f)  # MLP_a
        self.lattice_filter = linear(num_rbf, 3 * f)  # A (with bias a)
        self.atom_scalar_mlp = MLP(2 * f, f, f, activate_output=True)  # MLP_b
        self.atom_vector_mix = linear(f, f, bias=False)  # B
        self.lattice_scalar_mlp = MLP(2 * f, f, f, activate_output=True)  # MLP_c
        self.lattice_vector_mix = linear(f, f, bias=False)  # E
        self.lattice_vector_gate_proj = linear(f, 2 * f, bias=False)  # H
        self.lattice_gate_mlp = MLP(2 * f, f, 3 * f)  # MLP_d
        self.lattice_increment = linear(f, 1, bias=False)  # w_l

    def lattice_weights(self, radial: Tensor) -> Tensor:
        """``A psi + a`` scaled by 1/sqrt(3): radial features [..., R] -> [..., 3F]. Computed once per
        structure when the lattice geometry is the same for all its atoms (invariant coupling)."""
        return self.lattice_filter(radial) * (1.0 / math.sqrt(3.0))

    def to_atoms(self, h: Tensor, vec: Tensor, direction: Tensor, weights: Tensor, g_atoms: Tensor,
                 lattice_vec_atoms: Tensor) -> Tuple[Tensor, Tensor]:
        """Step 1 for this k. direction [N, 3] unit vectors, weights [N, 3F] (:meth:`lattice_weights` of
        each atom's radial features), g_atoms [N, F], lattice_vec_atoms [N, 3, F] (the lattice node's
        features seen by each atom)."""
        alpha = self.atom_filter_mlp(h) * weights
        gate, along, scalar = torch.split(alpha, self.channels, dim=1)
        h = h + scalar
        # Replaces vec (no residual), as the research code does; the 1/sqrt(F) goes on the [N, F] factors.
        scale = 1.0 / math.sqrt(self.channels)
        vec = torch.addcmul(direction.unsqueeze(2) * (along * scale).unsqueeze(1), (gate * scale).unsqueeze(1), vec)
        h = h + self.atom_scalar_mlp(torch.cat([h, g_atoms], dim=1))
        vec = vec + self.atom_vector_mix(vec + lattice_vec_atoms)
        return h, vec

    def from_atoms(self, mean_h: Tensor, mean_vec: Tensor, g: Tensor,
                   lattice_vec: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Steps 5 and 6 for this k. mean_h [B, F], mean_vec [B, 3, F], g [B, F], lattice_vec [B, 3, F].
        Returns the new g, lattice_vec and the lattice-vector increment [B, 3] (Å)."""
        g = g + self.lattice_scalar_mlp(torch.cat([mean_h, g], dim=1))
        lattice_vec = lattice_vec + self.lattice_vector_mix(mean_vec + lattice_vec)
        projected, gate_source = torch.split(self.lattice_vector_gate_proj(lattice_vec), self.channels, dim=2)
        kappa = self.lattice_gate_mlp(torch.cat([g, channel_norm(gate_source)], dim=1))
        vector_gate, scalar_update, scalar_gate = torch.split(kappa, self.channels, dim=1)
        g = scalar_update + g * torch.tanh(scalar_gate)
        lattice_vec = lattice_vec + vector_gate.unsqueeze(1) * projected
        increment = self.lattice_increment(lattice_vec).squeeze(-1)
        return g, lattice_vec, increment


class AtomMessageBlock(nn.Module):
    """Step 2: sum of scalar and vector messages over incoming edges: the edge filter on the radial
    basis (op ``radial_filter``) and the aggregation (op ``vector_message``); without autograd, where
    the aggregation runs a compiled kernel, the two in one kernel that never stores the filter (op
    ``radial_vector_message``). The op modules come from ``e3relax_fast/ops/registry.py`` when the block
    is built (:meth:`choose_ops`) and run as they are in eager mode, under TorchScript and torch.export.

    ``forward(h [N,F], vec [N,3,F], distance [E] (Å), edge_unit [E,3], edge_index [2,E], message_graph)``.
    """

    def __init__(self, channels: int, num_rbf: int, rbf_cutoff: float = 30.0, envelope_exponent: int = 5,
                 backend: str = "auto", device: Optional[torch.device] = None):
        super().__init__()
        self.channels = channels
        self.rbf_cutoff = float(rbf_cutoff)
        self.envelope_exponent = int(envelope_exponent)
        self.node_mlp = MLP(channels, channels // 2, 3 * channels)  # MLP_m
        self.edge_filter = linear(num_rbf, 3 * channels)  # C (with bias c), applied to the radial basis
        self.choose_ops(backend, device)

    def choose_ops(self, backend: str, device: Optional[torch.device]) -> None:
        """Hold the op modules the registry picks for ``backend`` on ``device`` (no weights: the state
        dict is unchanged). The fused kernel is held only beside a compiled aggregation of the same
        backend, so a request for one backend never runs another's message kernel."""
        basis = {"cutoff": self.rbf_cutoff, "envelope_exponent": self.envelope_exponent}
        aggregation = registry.choose("vector_message", backend, device)
        fused = registry.choose("radial_vector_message", backend, device)
        self.filter_op = registry.build("radial_filter", backend, device, **basis)
        self.aggregation_op = aggregation.module()
        self.fused_op: Optional[nn.Module] = (fused.module(**basis)
                                              if fused.backend == aggregation.backend != "torch" else None)
        self.needs_message_graph = bool(aggregation.module.needs_message_graph)

    def forward(self, h: Tensor, vec: Tensor, distance: Tensor, edge_unit: Tensor, edge_index: Tensor,
                message_graph: Optional[MessageGraph] = None) -> Tuple[Tensor, Tensor]:
        weight, bias = self.edge_filter.weight, self.edge_filter.bias
        phi = self.node_mlp(h)
        fused = self.fused_op
        if fused is not None and not torch.is_grad_enabled():
            dh, dvec = fused(phi, distance, weight, bias, vec, edge_unit, edge_index, message_graph)
        else:
            w = self.filter_op(distance, weight, bias)
            dh, dvec = self.aggregation_op(phi, w, vec, edge_unit, edge_index, message_graph)
        return (h + dh) * (1.0 / math.sqrt(2.0)), vec + dvec


class AtomUpdateBlock(nn.Module):
    """Step 3: gated self-update of each atom from its own scalar and vector features."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.vector_proj = linear(channels, 2 * channels, bias=False)  # D
        self.gate_mlp = MLP(2 * channels, channels, 3 * channels)  # MLP_s

    def forward(self, h: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
        projected, gate_source = torch.split(self.vector_proj(vec), self.channels, dim=2)
        gamma = self.gate_mlp(torch.cat([h, channel_norm(gate_source)], dim=1))
        vector_gate, scalar_update, scalar_gate = torch.split(gamma, self.channels, dim=1)
        h = (h + scalar_update * (1.0 / math.sqrt(2.0)) + h * torch.tanh(scalar_gate)) * (1.0 / math.sqrt(2.0))
        return h, torch.addcmul(vec, vector_gate.unsqueeze(1), projected)


class PositionUpdateBlock(nn.Module):
    """Step 4: displacement [N, 3] (Å) as the mean of a learned and a softmax-weighted channel sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight_mlp = MLP(channels, channels, channels)  # MLP_p
        self.channel_weight = linear(channels, 1, bias=False)  # w_p

    def forward(self, h: Tensor, vec: Tensor) -> Tensor:
        attention = torch.softmax(self.weight_mlp(h), dim=1)
        learned = self.channel_weight(vec).squeeze(-1)
        attended = torch.bmm(vec, attention.unsqueeze(2)).squeeze(2)  # sum over channels, no [N, 3, F] product
        return 0.5 * (learned + attended)


def edges_per_structure(edge_structure: Tensor, num_structures: int, dtype: torch.dtype) -> Tensor:
    """Edges of each structure [B] as ``dtype``, at least 1 (a structure without edges gets no strain)."""
    ones = torch.ones(edge_structure.shape, dtype=dtype, device=edge_structure.device)
    counts = torch.zeros((num_structures,), dtype=dtype, device=edge_structure.device).index_add(0, edge_structure, ones)
    return counts.clamp(min=1.0)


@torch.jit.unused
def _tracing():  # no annotation: TorchScript reads this file's postponed ones as strings it cannot resolve here
    """Whether torch.export or torch.compile is tracing this call (never true under TorchScript)."""
    return torch.compiler.is_compiling()


#: Edges per chunk of :class:`StrainBlock` (16k x 32 float32 hidden values: 2 MB, an L2 cache).
EDGES_PER_CHUNK = 16384


class StrainBlock(nn.Module):
    """A symmetric strain per structure from its bonds, for the cell (our addition; not in the paper).

    Each edge e (target i, source j, length d, unit vector u) gets a learned weight
    ``w_e = w . sigma(A h_j + B h_i + c1 d / s + c2 s / d)`` (s: ``distance_scale``, Å); the strain of
    structure b is the edge mean ``eps_b = mean_e w_e u_e u_e^T`` [B, 3, 3] (dimensionless), its
    Frobenius norm softly capped at ``max_strain``. A hidden unit switches at a bond length set by the
    two elements, so a bond that wants to be longer can push the cell outwards along itself, as a
    bond's term of the virial stress does: a response to local bonding, which carries over to
    structure types never seen in training better than the lattice nodes' basis-vector view. Two
    distance features rather than the Gaussian basis: the basis and its [E, R] product cost 10x more
    than the rest of the block. Invariant to translation, permutation, the periodic image and the
    lattice basis; ``eps -> R eps R^T`` under a rotation R, so ``L (I + eps)`` rotates with the cell.
    """

    def __init__(self, channels: int, distance_scale: float, hidden: int = 32, max_strain: float = 0.25):
        super().__init__()
        self.source = linear(channels, hidden, bias=False)
        self.target = linear(channels, hidden)
        self.distance = linear(2, hidden, bias=False)
        self.act = ScaledSiLU()
        self.edge_weight = linear(hidden, 1, bias=False)
        with torch.no_grad():
            self.edge_weight.weight.mul_(0.1)  # start near zero strain
        self.distance_scale = float(distance_scale)
        self.max_strain = float(max_strain)
        self.edges_per_chunk = EDGES_PER_CHUNK  # 0: all edges at once

    def forward(self, h: Tensor, distance: Tensor, edge_unit: Tensor, edge_index: Tensor, edge_structure: Tensor,
                edge_counts: Tensor) -> Tensor:
        """``edge_counts [B]``: edges per structure, at least 1 (the same for every layer: found once by
        the model, :func:`edges_per_structure`)."""
        num_structures = edge_counts.shape[0]
        source = self.source(h)
        target = self.target(h)
        total = torch.zeros((num_structures, 9), dtype=h.dtype, device=h.device)
        chunk = self.edges_per_chunk
        if chunk <= 0 or (not torch.jit.is_scripting() and _tracing()):
            # torch.export cannot loop over a symbolic edge count: one pass
            total = total.index_add(0, edge_structure,
                                    self._weighted_outer(source, target, distance, edge_unit, edge_index))
        else:
            # Edges in chunks: the [chunk, hidden] temporaries stay in cache (4x faster than one pass
            # over millions of edges on a CPU).
            num_edges = distance.shape[0]
            for begin in range(0, num_edges, chunk):
                end = min(begin + chunk, num_edges)
                total = total.index_add(0, edge_structure[begin:end],
                                        self._weighted_outer(source, target, distance[begin:end],
                                                             edge_unit[begin:end], edge_index[:, begin:end]))
        strain = total.view(-1, 3, 3) / edge_counts.view(-1, 1, 1)
        norm = torch.sqrt(strain.square().sum(dim=(1, 2)) + 1e-12)
        return strain * (self.max_strain * torch.tanh(norm / self.max_strain) / norm).view(-1, 1, 1)

    def _weighted_outer(self, source: Tensor, target: Tensor, distance: Tensor, edge_unit: Tensor,
                        edge_index: Tensor) -> Tensor:
        """``w_e u_e u_e^T`` of a run of edges, flattened: [E, 9]."""
        scaled = distance * (1.0 / self.distance_scale)
        hidden = source.index_select(0, edge_index[0]) + target.index_select(0, edge_index[1])
        hidden = hidden + self.distance(torch.stack([scaled, 1.0 / scaled], dim=1))
        weight = self.edge_weight(self.act(hidden))  # [E, 1]
        outer = (weight * edge_unit).unsqueeze(2) * edge_unit.unsqueeze(1)  # [E, 3, 3]
        return outer.reshape(-1, 9)
