"""E3Relax: unrelaxed crystal in, relaxed positions and cell after every layer out (docs/model.md).

Atoms and the three lattice vectors of each crystal are nodes with a scalar and a vector feature.
The graph is found once on the input structure; every layer recomputes edge geometry from the moved
positions and cell on that fixed graph, then runs lattice -> atom, atom-atom messages, the gated
self-update, the position update, atom -> lattice and the lattice update.

Our two departures from the research code (docs/model.md, "Our departures"): lattice increment k is added
to row k of the cell (rotation-equivariant), and ``lattice_coupling="invariant"`` (default) takes the
lattice-node geometry from the lattice vectors alone. The element table is indexed by Z - 1, so all
118 elements fit in its 118 rows.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn import (AtomMessageBlock, AtomUpdateBlock, GaussianRBF, LatticeNodeBlock, PositionUpdateBlock, StrainBlock,
                  safe_norm)
from ..nn.blocks import EDGES_PER_CHUNK, edges_per_structure
from ..nn.layers import MLP, ReducedPrecisionLinear, ReducedPrecisionMLP
from ..ops import MessageGraph, atom_structure_index, check_batch, edge_vectors, message_graph, radius_graph
from ..ops.scripted import (CompiledMessageGraph, CompiledRadialFilter, CompiledRadiusGraph, CompiledVectorMessage,
                            NoMessageGraph, ReferenceRadialFilter, ReferenceRadiusGraph, ReferenceVectorMessage)
from .config import E3RelaxConfig


def _structure_mean(values: Tensor, structure: Tensor, inv_sizes: Tensor) -> Tensor:
    """Mean over the atoms of each structure: [N, ...] -> [B, ...]."""
    total = torch.zeros((inv_sizes.shape[0],) + values.shape[1:], dtype=values.dtype, device=values.device)
    total = total.index_add(0, structure, values)
    return total * inv_sizes.view((-1,) + (1,) * (values.dim() - 1))


class E3RelaxLayer(nn.Module):
    """One layer: its own weights for the atom blocks and three lattice-node blocks."""

    def __init__(self, config: E3RelaxConfig, backend: str = "auto"):
        super().__init__()
        f = config.hidden_channels
        self.paper_coupling = config.lattice_coupling == "paper"
        self.affine_positions = config.position_update == "affine"
        self.rbf = GaussianRBF(config.num_rbf, config.rbf_cutoff, config.envelope_exponent)  # no weights
        self.lattice_nodes = nn.ModuleList([LatticeNodeBlock(f, config.num_rbf) for _ in range(3)])
        self.message = AtomMessageBlock(f, config.num_rbf, backend, config.rbf_cutoff, config.envelope_exponent)
        self.update = AtomUpdateBlock(f)
        self.position = PositionUpdateBlock(f)
        self.strain: Optional[StrainBlock] = StrainBlock(f, config.graph_cutoff) if config.strain_head else None

    def forward(
        self,
        pos: Tensor,
        cell: Tensor,
        h: Tensor,
        vec: Tensor,
        g: Tensor,
        lattice_vec: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        edge_structure: Tensor,
        structure: Tensor,
        inv_sizes: Tensor,
        csr: Optional[MessageGraph] = None,
        edge_counts: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        # Step 0: geometry from the current structure on the fixed graph.
        r = edge_vectors(pos, cell, edge_index, shifts, edge_structure)  # [E, 3]
        distance = safe_norm(r)
        edge_unit = -r / distance.unsqueeze(1)  # from the neighbour's image towards the target
        atom_cell = cell.index_select(0, structure)  # [N, 3, 3]
        if self.paper_coupling:
            # q_ik = l_k - x_i: lattice node k sits at the point l_k (depends on absolute positions).
            q = atom_cell - pos.unsqueeze(1)
            q_length = safe_norm(q)  # [N, 3]
            lattice_dir = -q / q_length.unsqueeze(2)
            lattice_rbf = self.rbf(q_length)  # [N, 3, R]
        else:
            # the same for every atom of a structure: radial features (and their filters below) per structure
            lengths = safe_norm(cell)  # [B, 3]
            lattice_dir = (cell / lengths.unsqueeze(2)).index_select(0, structure)
            lattice_rbf = self.rbf(lengths)  # [B, 3, R]

        # Step 1: lattice -> atom, k = 1, 2, 3 in turn.
        g_atoms = g.index_select(0, structure)  # [N, 3, F]
        lattice_vec_atoms = lattice_vec.index_select(0, structure)  # [N, 3, 3, F]
        for k, node in enumerate(self.lattice_nodes):
            weights = node.lattice_weights(lattice_rbf[:, k])
            if not self.paper_coupling:
                weights = weights.index_select(0, structure)
            h, vec = node.to_atoms(h, vec, lattice_dir[:, k], weights, g_atoms[:, k], lattice_vec_atoms[:, k])

        # Steps 2-4: atom-atom messages, gated self-update, position update.
        h, vec = self.message(h, vec, distance, edge_unit, edge_index, csr)  # radial basis fused in
        h, vec = self.update(h, vec)
        pos = pos + self.position(h, vec)

        # Steps 5-6: atom -> lattice and the lattice update (increment k added to row k).
        mean_h = _structure_mean(h, structure, inv_sizes)
        mean_vec = _structure_mean(vec, structure, inv_sizes)
        new_g: List[Tensor] = []
        new_lattice_vec: List[Tensor] = []
        increments: List[Tensor] = []
        for k, node in enumerate(self.lattice_nodes):
            g_k, lattice_vec_k, increment = node.from_atoms(mean_h, mean_vec, g[:, k], lattice_vec[:, k])
            new_g.append(g_k)
            new_lattice_vec.append(lattice_vec_k)
            increments.append(increment)
        new_cell = cell + torch.stack(increments, dim=1)
        strain = self.strain
        if strain is not None:
            assert edge_counts is not None, "E3Relax.forward passes the edge counts to layers with a strain head"
            eps = strain(h, distance, edge_unit, edge_index, edge_structure, edge_counts)
            new_cell = new_cell + torch.bmm(new_cell, eps)  # L' (I + eps): rows strained alike
        if self.affine_positions:
            # Atoms ride along with the cell change at fixed fractional coordinates: x <- x L^-1 L'.
            # A homogeneous strain moves every atom by an amount proportional to its position, which
            # displacements from translation-invariant features cannot express; and an atom moved by
            # a lattice vector n L at the input comes out moved by n L' (the same periodic image).
            deformation = torch.linalg.solve(cell, new_cell)  # [B, 3, 3], L F = L'
            pos = torch.bmm(pos.unsqueeze(1), deformation.index_select(0, structure)).squeeze(1)
        cell = new_cell
        return pos, cell, h, vec, torch.stack(new_g, dim=1), torch.stack(new_lattice_vec, dim=1)


class E3Relax(nn.Module):
    """The E3Relax network.

    Args:
        config: hyperparameters (default: the paper's).
        backend: backend of the fast ops (``"auto"``, ``"torch"``, ``"cpp"``, ``"cuda"``, ``"triton"``).

    ``forward(pos [N,3], z [N], cell [B,3,3], pbc [B,3], ptr [B+1], edge_index=None, shifts=None)``
    returns ``pos_layers [L, N, 3]`` and ``cell_layers [L, B, 3, 3]`` (Å), one entry per layer; the
    last is the prediction. Without ``edge_index``/``shifts`` the graph is built from the input.
    """

    def __init__(self, config: Optional[E3RelaxConfig] = None, backend: str = "auto"):
        super().__init__()
        config = config if config is not None else E3RelaxConfig()
        self.config = config
        self.graph_cutoff = float(config.graph_cutoff)
        self.max_neighbors = int(config.max_neighbors)
        self.self_images = str(config.self_images)
        self.num_elements = int(config.num_elements)
        self.strain_head = bool(config.strain_head)
        self.backend = backend
        f = config.hidden_channels
        self.element_embedding = nn.Embedding(config.num_elements, f)
        nn.init.uniform_(self.element_embedding.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.lattice_embedding = nn.Parameter(torch.randn(3, f))  # g_k at the input, one per lattice node
        self.layers = nn.ModuleList([E3RelaxLayer(config, backend) for _ in range(config.num_layers)])
        # The ops run under TorchScript, and in eager mode once hold_ops() was called (torch.export):
        # modules without weights, so that an exported model holds exactly the code it calls.
        self.graph_op: nn.Module = ReferenceRadiusGraph(self.graph_cutoff, self.max_neighbors, self.self_images)
        self.message_graph_op: nn.Module = NoMessageGraph()
        self.held_ops = False

    def hold_ops(self, compiled: bool, eager: bool = False) -> "E3Relax":
        """Fix the ops the model runs when scripted (and, with ``eager=True``, in eager mode too, with
        no Python-side input checks: for ``torch.export``). ``compiled=True``: the registered
        ``torch.ops.e3relax`` kernels (the op library must be loaded wherever the model runs);
        ``False``: the pure-PyTorch references (plain torch suffices)."""
        if compiled:
            self.graph_op = CompiledRadiusGraph(self.graph_cutoff, self.max_neighbors, self.self_images)
            self.message_graph_op = CompiledMessageGraph()
        else:
            self.graph_op = ReferenceRadiusGraph(self.graph_cutoff, self.max_neighbors, self.self_images)
            self.message_graph_op = NoMessageGraph()
        self.held_ops = eager
        filter_op = CompiledRadialFilter if compiled else ReferenceRadialFilter
        for layer in self.layers:
            layer.message.aggregation_op = CompiledVectorMessage() if compiled else ReferenceVectorMessage()
            layer.message.filter_op = filter_op(layer.message.rbf_cutoff, layer.message.envelope_exponent)
            layer.message.held_ops = eager
            if layer.strain is not None:
                layer.strain.edges_per_chunk = 0 if eager else EDGES_PER_CHUNK
        return self

    def reduce_matmul_precision(self, dtype: torch.dtype = torch.bfloat16) -> "E3Relax":
        """For inference: run the channel-mixing matrix products in ``dtype`` (bfloat16), in place.

        Every :class:`MLP` becomes a :class:`ReducedPrecisionMLP` (input rounded to bfloat16, both
        products accumulated in float32 with the hidden activation kept in bfloat16, output back in the
        model's dtype) and every other ``nn.Linear`` with at least 8 outputs a
        :class:`ReducedPrecisionLinear`. Positions, cells, edge geometry, the radial filters and the
        residual sums stay in the model's dtype, as do the two heads that write displacements and
        lattice increments (one output each), and the strain head's small products (bond lengths in
        bfloat16 would be resolved to 0.4%). On CPUs with AMX or AVX512-BF16 the products run ~8x faster; elsewhere this is slower.
        The result is no longer the float32 model to rounding: measure (``bench/bench_screening.py``).
        """
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        for module in list(self.modules()):
            if isinstance(module, StrainBlock):
                continue  # its products are narrow (32 outputs), and bond lengths need more than 8 bits
            for name, child in list(module.named_children()):
                if isinstance(child, MLP):
                    setattr(module, name, ReducedPrecisionMLP(child, dtype))
                # edge_filter's weights go to the radial kernels as they are, never through a product
                elif isinstance(child, nn.Linear) and name != "edge_filter" and child.out_features >= 8:
                    setattr(module, name, ReducedPrecisionLinear(child, dtype))
        return self

    def set_backend(self, backend: str) -> "E3Relax":
        self.backend = backend
        for layer in self.layers:
            layer.message.backend = backend
        return self

    @torch.jit.unused
    def _check(self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> None:
        check_batch(pos, cell, pbc, ptr, z, num_elements=self.num_elements)

    def forward(
        self,
        pos: Tensor,
        z: Tensor,
        cell: Tensor,
        pbc: Tensor,
        ptr: Tensor,
        edge_index: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            if not self.held_ops:
                self._check(pos, z, cell, pbc, ptr)
        held = torch.jit.is_scripting() or self.held_ops
        if edge_index is None or shifts is None:
            with torch.no_grad():
                if held:
                    edge_index, shifts = self.graph_op(pos.detach(), cell.detach(), pbc, ptr)
                else:
                    # Triton serves message passing only; the graph then comes from the fastest compiled op
                    graph_backend = "auto" if self.backend == "triton" else self.backend
                    edge_index, shifts, _ = radius_graph(pos.detach(), cell.detach(), pbc, ptr, self.graph_cutoff,
                                                         self.max_neighbors, self.self_images, graph_backend)
        num_atoms = pos.shape[0]
        structure = atom_structure_index(ptr, num_atoms)
        edge_structure = structure.index_select(0, edge_index[1])
        sizes = (ptr[1:] - ptr[:-1]).clamp(min=1)
        inv_sizes = 1.0 / sizes.to(pos.dtype)
        num_structures = cell.shape[0]
        h = self.element_embedding(z - 1)
        channels = h.shape[1]
        vec = torch.zeros((num_atoms, 3, channels), dtype=pos.dtype, device=pos.device)
        g = self.lattice_embedding.to(pos.dtype).unsqueeze(0).expand(num_structures, 3, channels)
        lattice_vec = torch.zeros((num_structures, 3, 3, channels), dtype=pos.dtype, device=pos.device)
        csr: Optional[MessageGraph] = None
        if held:
            csr = self.message_graph_op(edge_index, num_atoms)
        elif not torch.jit.is_scripting() and self.backend != "torch":
            csr = message_graph(edge_index, num_atoms)  # once per batch, for every layer's fused kernel
        # the graph is fixed: the strain heads' edge counts are the same in every layer
        edge_counts: Optional[Tensor] = None
        if self.strain_head:
            edge_counts = edges_per_structure(edge_structure, num_structures, pos.dtype)
        pos_layers: List[Tensor] = []
        cell_layers: List[Tensor] = []
        for layer in self.layers:
            pos, cell, h, vec, g, lattice_vec = layer(pos, cell, h, vec, g, lattice_vec, edge_index, shifts,
                                                      edge_structure, structure, inv_sizes, csr, edge_counts)
            pos_layers.append(pos)
            cell_layers.append(cell)
        return torch.stack(pos_layers), torch.stack(cell_layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
