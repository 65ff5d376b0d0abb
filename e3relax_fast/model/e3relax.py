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
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn import (AtomMessageBlock, AtomUpdateBlock, GaussianRBF, LatticeNodeBlock, PositionUpdateBlock, StrainBlock,
                  safe_norm)
from ..nn.blocks import edges_per_structure
from ..nn.layers import MLP, MixedPrecisionLinear, ReducedPrecisionLinear, ReducedPrecisionMLP
from ..ops import (MessageGraph, atom_structure_index, check_batch, check_pair_budget, check_sorted_by_target,
                   edge_vectors, message_graph_unchecked, registry)
from .config import E3RelaxConfig


class LayerState(NamedTuple):
    """What one layer updates: positions [N, 3] and cells [B, 3, 3] (Å, lattice vectors as rows), atom
    features ``h [N, F]``, ``vec [N, 3, F]`` and lattice-node features ``g [B, 3, F]``,
    ``lattice_vec [B, 3, 3, F]``."""

    pos: Tensor
    cell: Tensor
    h: Tensor
    vec: Tensor
    g: Tensor
    lattice_vec: Tensor


class Topology(NamedTuple):
    """What every layer shares, found once per batch on the input structure: the edges (``edge_index
    [2, E]``: source j, target i; integer ``shifts [E, 3]``), the structure of each atom [N] and edge [E],
    ``inv_sizes [B]`` (1 / atoms per structure), the message graph (CSR form of the edges, for compiled
    message kernels; None otherwise) and ``edge_counts [B]`` (edges per structure, at least 1; strain head
    only)."""

    edge_index: Tensor
    shifts: Tensor
    edge_structure: Tensor
    structure: Tensor
    inv_sizes: Tensor
    message_graph: Optional[MessageGraph]
    edge_counts: Optional[Tensor]


def _structure_mean(values: Tensor, structure: Tensor, inv_sizes: Tensor) -> Tensor:
    """Mean over the atoms of each structure: [N, ...] -> [B, ...]."""
    total = torch.zeros((inv_sizes.shape[0],) + values.shape[1:], dtype=values.dtype, device=values.device)
    total = total.index_add(0, structure, values)
    return total * inv_sizes.view((-1,) + (1,) * (values.dim() - 1))


class E3RelaxLayer(nn.Module):
    """One layer: its own weights for the atom blocks and three lattice-node blocks.
    ``forward(state: LayerState, topology: Topology) -> LayerState``."""

    def __init__(self, config: E3RelaxConfig, backend: str = "auto", device: Optional[torch.device] = None):
        super().__init__()
        f = config.hidden_channels
        self.paper_coupling = config.lattice_coupling == "paper"
        self.affine_positions = config.position_update == "affine"
        self.rbf = GaussianRBF(config.num_rbf, config.rbf_cutoff, config.envelope_exponent)  # no weights
        # "shared": one block for all three nodes, run on the three at once (E3RelaxConfig.lattice_nodes)
        self.shared_lattice = config.lattice_nodes == "shared"
        self.lattice_nodes = nn.ModuleList([LatticeNodeBlock(f, config.num_rbf)
                                            for _ in range(1 if self.shared_lattice else 3)])
        self.message = AtomMessageBlock(f, config.num_rbf, config.rbf_cutoff, config.envelope_exponent, backend,
                                        device)
        self.update = AtomUpdateBlock(f)
        self.position = PositionUpdateBlock(f)
        self.strain: Optional[StrainBlock] = StrainBlock(f, config.graph_cutoff) if config.strain_head else None

    def forward(self, state: LayerState, topology: Topology) -> LayerState:
        pos, cell, h, vec, g, lattice_vec = state
        # Step 0: geometry from the current structure on the fixed graph.
        r = edge_vectors(pos, cell, topology.edge_index, topology.shifts, topology.edge_structure)  # [E, 3]
        distance = safe_norm(r)
        edge_unit = -r / distance.unsqueeze(1)  # from the neighbour's image towards the target
        # Step 1: lattice -> atom, k = 1, 2, 3 in turn.
        h, vec = self._lattice_to_atoms(pos, cell, h, vec, g, lattice_vec, topology.structure)
        # Steps 2-4: atom-atom messages, gated self-update, position update.
        h, vec = self.message(h, vec, distance, edge_unit, topology.edge_index, topology.message_graph)
        h, vec = self.update(h, vec)
        pos = pos + self.position(h, vec)
        # Steps 5-6: atom -> lattice and the lattice update (increment k added to row k).
        g, lattice_vec, new_cell = self._atoms_to_lattice(cell, h, vec, g, lattice_vec, topology)
        strain = self.strain
        edge_counts = topology.edge_counts
        if strain is not None:
            assert edge_counts is not None, "E3Relax.forward counts edges for layers with a strain head"
            eps = strain(h, distance, edge_unit, topology.edge_index, topology.edge_structure, edge_counts)
            new_cell = new_cell + torch.bmm(new_cell, eps)  # L' (I + eps): rows strained alike
        if self.affine_positions:
            # Atoms ride along with the cell change at fixed fractional coordinates: x <- x L^-1 L'.
            # A homogeneous strain moves every atom by an amount proportional to its position, which
            # displacements from translation-invariant features cannot express; and an atom moved by
            # a lattice vector n L at the input comes out moved by n L' (the same periodic image).
            deformation = torch.linalg.solve(cell, new_cell)  # [B, 3, 3], L F = L'
            pos = torch.bmm(pos.unsqueeze(1), deformation.index_select(0, topology.structure)).squeeze(1)
        return LayerState(pos, new_cell, h, vec, g, lattice_vec)

    def _lattice_to_atoms(self, pos: Tensor, cell: Tensor, h: Tensor, vec: Tensor, g: Tensor, lattice_vec: Tensor,
                          structure: Tensor) -> Tuple[Tensor, Tensor]:
        """Step 1: each lattice node k messages every atom of its structure; returns the new h, vec."""
        if self.paper_coupling:
            # q_ik = l_k - x_i: lattice node k sits at the point l_k (depends on absolute positions).
            q = cell.index_select(0, structure) - pos.unsqueeze(1)
            q_length = safe_norm(q)  # [N, 3]
            lattice_dir = -q / q_length.unsqueeze(2)
            lattice_rbf = self.rbf(q_length)  # [N, 3, R]
        else:
            # the same for every atom of a structure: radial features (and their filters below) per structure
            lengths = safe_norm(cell)  # [B, 3]
            lattice_dir = (cell / lengths.unsqueeze(2)).index_select(0, structure)
            lattice_rbf = self.rbf(lengths)  # [B, 3, R]
        g_atoms = g.index_select(0, structure)  # [N, 3, F]
        lattice_vec_atoms = lattice_vec.index_select(0, structure)  # [N, 3, 3, F]
        if self.shared_lattice:
            return self._shared_lattice_to_atoms(h, vec, lattice_dir, lattice_rbf, g_atoms, lattice_vec_atoms,
                                                 structure)
        for k, node in enumerate(self.lattice_nodes):
            weights = node.lattice_weights(lattice_rbf[:, k])
            if not self.paper_coupling:
                weights = weights.index_select(0, structure)
            h, vec = node.to_atoms(h, vec, lattice_dir[:, k], weights, g_atoms[:, k], lattice_vec_atoms[:, k])
        return h, vec

    def _shared_lattice_to_atoms(self, h: Tensor, vec: Tensor, lattice_dir: Tensor, lattice_rbf: Tensor,
                                 g_atoms: Tensor, lattice_vec_atoms: Tensor, structure: Tensor) -> Tuple[Tensor, Tensor]:
        """Step 1 with one block for the three nodes: each node's update is computed from the same h
        [N, F], vec [N, 3, F] (rows of 3N: atom i, node k), and the three changes are added, so the
        order of the nodes does not matter. lattice_dir [N, 3, 3], lattice_rbf [B or N, 3, R], g_atoms
        [N, 3, F], lattice_vec_atoms [N, 3, 3, F]."""
        node = self.lattice_nodes[0]
        n, f = h.shape
        weights = node.lattice_weights(lattice_rbf)  # [B or N, 3, 3F]
        if not self.paper_coupling:
            weights = weights.index_select(0, structure)
        h3 = h.unsqueeze(1).expand(n, 3, f)
        vec3 = vec.unsqueeze(1).expand(n, 3, 3, f)
        new_h, new_vec = node.to_atoms(h3.reshape(3 * n, f), vec3.reshape(3 * n, 3, f), lattice_dir.reshape(3 * n, 3),
                                       weights.reshape(3 * n, 3 * f), g_atoms.reshape(3 * n, f),
                                       lattice_vec_atoms.reshape(3 * n, 3, f))
        return (h + (new_h.view(n, 3, f) - h3).sum(1), vec + (new_vec.view(n, 3, 3, f) - vec3).sum(1))

    def _atoms_to_lattice(self, cell: Tensor, h: Tensor, vec: Tensor, g: Tensor, lattice_vec: Tensor,
                          topology: Topology) -> Tuple[Tensor, Tensor, Tensor]:
        """Steps 5-6: the lattice nodes read the atom means and move the cell; returns the new g,
        lattice_vec and cell (before the strain head)."""
        mean_h = _structure_mean(h, topology.structure, topology.inv_sizes)
        mean_vec = _structure_mean(vec, topology.structure, topology.inv_sizes)
        if self.shared_lattice:  # the three nodes as rows of 3B: structure b, node k
            b, f = mean_h.shape
            new_g, new_lattice_vec, increment = self.lattice_nodes[0].from_atoms(
                mean_h.unsqueeze(1).expand(b, 3, f).reshape(3 * b, f),
                mean_vec.unsqueeze(1).expand(b, 3, 3, f).reshape(3 * b, 3, f), g.reshape(3 * b, f),
                lattice_vec.reshape(3 * b, 3, f))
            return (new_g.view(b, 3, f), new_lattice_vec.view(b, 3, 3, f),
                    cell + increment.view(b, 3, 3))
        new_g: List[Tensor] = []
        new_lattice_vec: List[Tensor] = []
        increments: List[Tensor] = []
        for k, node in enumerate(self.lattice_nodes):
            g_k, lattice_vec_k, increment = node.from_atoms(mean_h, mean_vec, g[:, k], lattice_vec[:, k])
            new_g.append(g_k)
            new_lattice_vec.append(lattice_vec_k)
            increments.append(increment)
        return torch.stack(new_g, dim=1), torch.stack(new_lattice_vec, dim=1), cell + torch.stack(increments, dim=1)


class E3Relax(nn.Module):
    """The E3Relax network.

    Args:
        config: hyperparameters (default: the paper's).
        backend: which implementation of the fast ops to hold (``"auto"``, ``"torch"``, ``"cpp"``,
            ``"cuda"``, ``"triton"``; ``e3relax_fast/ops/registry.py``), chosen once, here.
        device: the device type the ops are chosen for (default: the CPU); :meth:`choose_ops` chooses
            again after a move to another device type.

    ``forward(pos [N,3], z [N], cell [B,3,3], pbc [B,3], ptr [B+1], edge_index=None, shifts=None)``
    returns ``pos_layers [L, N, 3]`` and ``cell_layers [L, B, 3, 3]`` (Å), one entry per layer; the
    last is the prediction. Without ``edge_index``/``shifts`` the graph is built from the input. The
    same modules run in eager mode, under TorchScript and under torch.export; inputs are checked in
    eager mode only (the deployed wrapper in ``e3relax_fast/export.py`` checks its own).
    """

    def __init__(self, config: Optional[E3RelaxConfig] = None, backend: str = "auto",
                 device: Optional[torch.device | str] = None):
        super().__init__()
        config = config if config is not None else E3RelaxConfig()
        self.config = config
        self.graph_cutoff = float(config.graph_cutoff)
        self.max_neighbors = int(config.max_neighbors)
        self.self_images = str(config.self_images)
        self.num_elements = int(config.num_elements)
        self.strain_head = bool(config.strain_head)
        f = config.hidden_channels
        self.element_embedding = nn.Embedding(config.num_elements, f)
        nn.init.uniform_(self.element_embedding.weight, -math.sqrt(3.0), math.sqrt(3.0))
        # g_k at the input: one per lattice node, or one for all three when they share their weights
        self.lattice_embedding = nn.Parameter(torch.randn(1 if config.lattice_nodes == "shared" else 3, f))
        self.layers = nn.ModuleList([E3RelaxLayer(config, backend, device) for _ in range(config.num_layers)])
        self.choose_ops(backend, device)

    def choose_ops(self, backend: str = "auto", device: Optional[torch.device | str] = None) -> "E3Relax":
        """Hold the op modules ``e3relax_fast/ops/registry.py`` picks for ``backend`` on ``device`` (the
        radius graph here, the message ops in every layer's :class:`AtomMessageBlock`). Op modules hold
        no weights, so the state dict is unchanged. Raises ``RuntimeError`` with the reason when an
        explicit backend cannot run there."""
        self.backend = backend
        self.ops_device = torch.device(device if device is not None else "cpu").type
        self.graph_op = registry.build("radius_graph", backend, device, cutoff=self.graph_cutoff,
                                       max_neighbors=self.max_neighbors, self_images=self.self_images)
        for layer in self.layers:
            layer.message.choose_ops(backend, device)
        self.needs_message_graph = any(bool(layer.message.needs_message_graph) for layer in self.layers)
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
        for parent, name, child in self._channel_mixing():
            narrow = ReducedPrecisionMLP(child, dtype) if isinstance(child, MLP) else ReducedPrecisionLinear(child, dtype)
            setattr(parent, name, narrow)
        return self

    def train_matmuls_in_bfloat16(self) -> "E3Relax":
        """For training on CPUs with bfloat16 hardware (AVX512-BF16, AMX): the Linears of the channel-
        mixing products that :meth:`reduce_matmul_precision` narrows become
        :class:`~e3relax_fast.nn.layers.MixedPrecisionLinear`, in place. Parameters, their names and
        the optimiser's float32 master weights are unchanged; geometry, filters and heads stay float32."""
        for _, _, child in self._channel_mixing():
            for linear in ([m for m in child if isinstance(m, nn.Linear)] if isinstance(child, MLP) else [child]):
                linear.__class__ = MixedPrecisionLinear  # same parameters, same state-dict keys
        return self

    def _channel_mixing(self) -> List[Tuple[nn.Module, str, nn.Module]]:
        """Where the channel-mixing products are, as ``(parent, name, module)``: every :class:`MLP`, and
        every other ``nn.Linear`` with at least 8 outputs. Not the strain heads' (narrow, 32 outputs,
        and bond lengths need more than 8 bits) nor ``edge_filter`` (its weights go to the radial kernels
        as they are, never through a product); the one-output heads have fewer than 8."""
        found = []
        for parent in self.modules():
            if isinstance(parent, (StrainBlock, MLP)):
                continue  # an MLP is one entry, of its parent's
            for name, child in parent.named_children():
                if isinstance(child, MLP) or (isinstance(child, nn.Linear) and name != "edge_filter"
                                              and child.out_features >= 8):
                    found.append((parent, name, child))
        return found

    @torch.jit.unused
    def _check(self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor,
               edge_index: Optional[Tensor]) -> None:
        """Eager inputs: ``ValueError`` naming the structure and field. Skipped while torch.export or
        torch.compile traces (the checks read data)."""
        if torch.compiler.is_compiling():
            return
        if pos.device.type != self.ops_device:
            raise RuntimeError(f"the model's ops were chosen for {self.ops_device}, the inputs are on "
                               f"{pos.device.type}: call model.choose_ops(backend, device) after moving it")
        check_batch(pos, cell, pbc, ptr, z, num_elements=self.num_elements)
        if edge_index is None:
            check_pair_budget(pos, cell, pbc, ptr, self.graph_cutoff)
        elif self.needs_message_graph:
            check_sorted_by_target(edge_index)  # _topology then builds the message graph unchecked

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
            self._check(pos, z, cell, pbc, ptr, edge_index)
        if edge_index is None or shifts is None:
            with torch.no_grad():
                edge_index, shifts, _ = self.graph_op(pos.detach(), cell.detach(), pbc, ptr)
        topology = self._topology(pos, cell, ptr, edge_index, shifts)
        state = self._initial_state(pos, z, cell)
        pos_layers: List[Tensor] = []
        cell_layers: List[Tensor] = []
        for layer in self.layers:
            state = layer(state, topology)
            pos_layers.append(state.pos)
            cell_layers.append(state.cell)
        return torch.stack(pos_layers), torch.stack(cell_layers)

    def _topology(self, pos: Tensor, cell: Tensor, ptr: Tensor, edge_index: Tensor, shifts: Tensor) -> Topology:
        """What the layers share (:class:`Topology`), found once for the batch."""
        num_atoms = pos.shape[0]
        structure = atom_structure_index(ptr, num_atoms)
        edge_structure = structure.index_select(0, edge_index[1])
        inv_sizes = 1.0 / (ptr[1:] - ptr[:-1]).clamp(min=1).to(pos.dtype)
        graph: Optional[MessageGraph] = None
        if self.needs_message_graph:
            graph = message_graph_unchecked(edge_index, num_atoms)  # sorted: checked above or built so
        edge_counts: Optional[Tensor] = None
        if self.strain_head:  # the graph is fixed: the strain heads' edge counts are the same in every layer
            edge_counts = edges_per_structure(edge_structure, cell.shape[0], pos.dtype)
        return Topology(edge_index, shifts, edge_structure, structure, inv_sizes, graph, edge_counts)

    def _initial_state(self, pos: Tensor, z: Tensor, cell: Tensor) -> LayerState:
        """Element embeddings, the learned lattice-node scalars, zero vector features."""
        h = self.element_embedding(z - 1)
        num_structures, channels = cell.shape[0], h.shape[1]
        vec = torch.zeros((pos.shape[0], 3, channels), dtype=pos.dtype, device=pos.device)
        g = self.lattice_embedding.to(pos.dtype).unsqueeze(0).expand(num_structures, 3, channels)  # [1 or 3, F]
        lattice_vec = torch.zeros((num_structures, 3, 3, channels), dtype=pos.dtype, device=pos.device)
        return LayerState(pos, cell, h, vec, g, lattice_vec)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
