"""Periodic radius graph of a flat batch of crystals: the topology every E3Relax layer reuses.

Conventions (stated once, used everywhere):
- ``edge_index[0]`` is the source (neighbour) j, ``edge_index[1]`` the target (centre) i.
- ``shifts`` are integer cell offsets: ``r_ij = pos[j] + shifts @ cell - pos[i]`` (Å).
- A pair is an edge iff ``|r_ij|^2 < cutoff^2`` in the dtype of ``pos`` (a pair at exactly the cutoff is
  excluded, as in ASE and vesin). An atom's own images (j == i, shift != 0) are edges too.
- A non-periodic axis gets no shifts along it.
- Edges are sorted by target, then distance, then source, then shift (lexicographic), so the output
  is identical run to run and on every backend. ``max_neighbors > 0`` keeps the first
  ``max_neighbors`` edges of each target in that order and every later edge within
  ``SHELL_TOLERANCE`` Å of the last of them: the cap keeps or drops whole shells of equal distance, so a
  symmetric crystal keeps a symmetric graph and a jitter of 1e-6 Å changes no edge.
- ``self_images="paper"`` is the research code's graph: after the cap, every self-image edge is
  dropped and six fixed ones are added to every atom, with shifts (0,0,1), (0,1,0), (1,0,0),
  (0,1,1), (1,0,1), (1,1,0), whatever their length. On a partly periodic structure only those that
  move along periodic axes are added.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn


SELF_IMAGE_MODES = ("all", "paper")

#: Distances within this much (Å) of the last edge under the neighbour cap belong to its shell and are
#: kept (kShellTolerance in csrc/include/e3relax/radius_graph_common.h, the compiled kernels' rule).
SHELL_TOLERANCE: float = 1e-3


def self_image_mode(self_images: str) -> int:
    """The compiled op's integer for a self-image rule (its index in :data:`SELF_IMAGE_MODES`): the one
    place the Python string becomes the C++ ``int64_t self_images``."""
    if self_images not in SELF_IMAGE_MODES:
        raise ValueError(f"self_images must be 'all' or 'paper', got {self_images!r}")
    return SELF_IMAGE_MODES.index(self_images)


def _paper_self_shifts(device: torch.device) -> Tensor:
    return torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]],
                        dtype=torch.long, device=device)


def _lexsort(keys: List[Tensor]) -> Tensor:
    """Permutation that sorts by ``keys[0]``, then ``keys[1]``, ... (stable sorts from the last key)."""
    order = torch.arange(keys[0].numel(), device=keys[0].device)
    for k in range(len(keys) - 1, -1, -1):
        order = order[torch.sort(keys[k][order], stable=True)[1]]
    return order


def _shift_offsets(shifts: Tensor, cell: Tensor) -> Tensor:
    """``shifts @ cell`` as ``s0 * l0 + s1 * l1 + s2 * l2``, in that order: the compiled kernels use the
    same arithmetic, so every backend finds the same squared distances to the last bit."""
    s = shifts.to(cell.dtype)
    return s[:, 0:1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]


def _distance_sq(pos_source: Tensor, offset: Tensor, pos_target: Tensor) -> Tensor:
    """``|(pos_j + offset) - pos_i|^2`` summed x, y, z in order (broadcasting over leading axes)."""
    r = pos_source + offset - pos_target
    return r[..., 0] * r[..., 0] + r[..., 1] * r[..., 1] + r[..., 2] * r[..., 2]


def _image_range(frac: Tensor, inv_cell: Tensor, periodic: Tensor, cutoff: float) -> List[int]:
    """Largest |shift| per axis that can bring any atom within ``cutoff`` of any other.

    With fractional coordinates f and reciprocal rows b_k (columns of inv(cell)):
    (f_j - f_i + n)_k = r . b_k, so |n_k| <= cutoff |b_k| + (spread of f_k).
    """
    spread = frac.max(dim=0)[0] - frac.min(dim=0)[0]
    reach = cutoff * torch.linalg.vector_norm(inv_cell, dim=0) + spread
    out: List[int] = []
    for k in range(3):
        out.append(int(math.ceil(float(reach[k]))) if bool(periodic[k]) else 0)
    return out


def _structure_pairs(pos: Tensor, cell: Tensor, periodic: Tensor, cutoff: float, index: int,
                     max_images: int = 200000, chunk_triples: int = 4194304
                     ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """All (target i, source j, shift, |r|^2) within the cutoff for one structure, local indices.

    A cell that needs more than ``max_images`` periodic images is refused: it has a lattice vector so
    short against the cutoff that the graph would be absurdly dense. Distances are evaluated in
    chunks of at most ``chunk_triples`` (image, target, source) triples to bound memory.
    """
    n = pos.shape[0]
    inv_cell = torch.linalg.inv(cell.double())
    frac = pos.double() @ inv_cell
    reach = _image_range(frac, inv_cell, periodic, cutoff)
    num_images = (2 * reach[0] + 1) * (2 * reach[1] + 1) * (2 * reach[2] + 1)
    if num_images > max_images:
        raise ValueError("structure " + str(index) + ": field 'cell' is too small for cutoff "
                         + str(cutoff) + " Å: the radius graph would need " + str(num_images)
                         + " periodic images (a lattice vector is far shorter than the cutoff)")
    axes = [torch.arange(-r, r + 1, device=pos.device) for r in reach]
    shifts = torch.cartesian_prod(axes[0], axes[1], axes[2]).reshape(-1, 3)  # lexicographic order
    offsets = _shift_offsets(shifts, cell)  # [S, 3]
    cutoff_sq = cutoff * cutoff
    local = torch.arange(n, device=pos.device)
    chunk = max(1, chunk_triples // max(1, n * n))
    targets: List[Tensor] = []
    sources: List[Tensor] = []
    shift_ids: List[Tensor] = []
    dist_sq: List[Tensor] = []
    for start in range(0, shifts.shape[0], chunk):
        block = offsets[start:start + chunk]
        # r[s, i, j] = pos[j] + offset[s] - pos[i]
        d2 = _distance_sq(pos[None, None, :, :], block[:, None, None, :], pos[None, :, None, :])
        keep = d2 < cutoff_sq
        is_origin = (shifts[start:start + chunk] == 0).all(dim=1)
        keep = keep & ~(is_origin[:, None, None] & (local[:, None] == local[None, :])[None, :, :])
        found = torch.nonzero(keep)
        s, i, j = found[:, 0], found[:, 1], found[:, 2]
        targets.append(i)
        sources.append(j)
        shift_ids.append(s + start)
        dist_sq.append(d2[s, i, j])
    shift_id = torch.cat(shift_ids)
    return torch.cat(targets), torch.cat(sources), shifts[shift_id], torch.cat(dist_sq)


def radius_graph_reference(
    pos: Tensor,
    cell: Tensor,
    pbc: Tensor,
    ptr: Tensor,
    cutoff: float,
    max_neighbors: int = 0,
    self_images: str = "all",
) -> Tuple[Tensor, Tensor, Tensor]:
    """Brute force over periodic images; the oracle for the compiled kernels. TorchScript-compatible.

    Args:
        pos: [N, 3] Cartesian positions (Å) of a flat batch.
        cell: [B, 3, 3] lattice vectors as rows (Å).
        pbc: [B, 3] bool, periodicity per axis.
        ptr: [B + 1] long, atoms of structure b are ``ptr[b]:ptr[b + 1]``.
        cutoff: radius (Å); pairs with distance < cutoff are edges.
        max_neighbors: keep the nearest this many per target atom (0 keeps all).
        self_images: ``"all"`` or ``"paper"`` (see the module docstring).

    Returns:
        edge_index [2, E] long (source j, target i; global atom indices), shifts [E, 3] long,
        counts [B] long (edges per structure).
    """
    if not cutoff > 0.0 or cutoff == float("inf"):  # NaN fails the first test
        raise ValueError("cutoff must be positive and finite, got " + str(cutoff))
    if max_neighbors < 0:
        raise ValueError("max_neighbors must be >= 0, got " + str(max_neighbors))
    if self_images != "all" and self_images != "paper":
        raise ValueError("self_images must be 'all' or 'paper', got '" + self_images + "'")
    device = pos.device
    num_structures = ptr.numel() - 1
    all_targets: List[Tensor] = []
    all_sources: List[Tensor] = []
    all_shifts: List[Tensor] = []
    counts = torch.zeros(num_structures, dtype=torch.long, device=device)
    for b in range(num_structures):
        start = int(ptr[b])
        n = int(ptr[b + 1]) - start
        if n == 0:
            continue
        target, source, shift = _structure_edges(pos[start:start + n], cell[b], pbc[b], cutoff, b, max_neighbors,
                                                 self_images)
        all_targets.append(target + start)
        all_sources.append(source + start)
        all_shifts.append(shift)
        counts[b] = target.numel()
    if len(all_targets) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return torch.stack([empty, empty]), torch.zeros((0, 3), dtype=torch.long, device=device), counts
    edge_index = torch.stack([torch.cat(all_sources), torch.cat(all_targets)])
    return edge_index, torch.cat(all_shifts), counts


def _structure_edges(x: Tensor, lattice: Tensor, periodic: Tensor, cutoff: float, index: int, max_neighbors: int,
                     self_images: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(target, source, shift) of one structure's edges in the output order, local atom indices:
    x [n, 3], lattice [3, 3] (rows), periodic [3]."""
    target, source, shift, d2 = _structure_pairs(x, lattice, periodic, cutoff, index)
    order = _lexsort([target, d2, source, shift[:, 0], shift[:, 1], shift[:, 2]])
    target, source, shift, d2 = target[order], source[order], shift[order], d2[order]
    if max_neighbors > 0:
        keep = _within_cap(target, d2, max_neighbors)
        target, source, shift, d2 = target[keep], source[keep], shift[keep], d2[keep]
    if self_images == "paper":
        return _paper_self_images(x, lattice, periodic, target, source, shift, d2)
    return target, source, shift


def _within_cap(target: Tensor, d2: Tensor, max_neighbors: int) -> Tensor:
    """Bool [E] of the edges (sorted by target, then distance) that the cap keeps: the first
    ``max_neighbors`` of each target and the rest of the shell of the last of them (``SHELL_TOLERANCE``,
    compared in float64 on the distances as computed, as the kernels do)."""
    first = torch.searchsorted(target, target)  # first edge of each target (sorted)
    end = torch.searchsorted(target, target, right=True)
    rank = torch.arange(target.numel(), device=target.device) - first
    last = torch.minimum(first + max_neighbors - 1, end - 1)
    reach = torch.sqrt(d2.double().index_select(0, last)) + 1e-3  # SHELL_TOLERANCE (TorchScript reads no globals)
    return (rank < max_neighbors) | (d2.double() <= reach * reach)


def _paper_self_images(x: Tensor, lattice: Tensor, periodic: Tensor, target: Tensor, source: Tensor, shift: Tensor,
                       d2: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The research code's rule on capped, sorted edges: drop every self-image edge, add the six fixed
    ones (those along periodic axes only) to every atom, sort again."""
    keep = source != target
    target, source, shift, d2 = target[keep], source[keep], shift[keep], d2[keep]
    fixed = _paper_self_shifts(x.device)
    fixed = fixed[((fixed != 0) & ~periodic[None, :]).sum(dim=1) == 0]
    atoms = torch.arange(x.shape[0], device=x.device)
    fixed_target = atoms.repeat_interleave(fixed.shape[0])
    fixed_shift = fixed.repeat(x.shape[0], 1)
    fixed_pos = x.index_select(0, fixed_target)
    target = torch.cat([target, fixed_target])
    source = torch.cat([source, fixed_target])
    shift = torch.cat([shift, fixed_shift])
    d2 = torch.cat([d2, _distance_sq(fixed_pos, _shift_offsets(fixed_shift, lattice), fixed_pos)])
    order = _lexsort([target, d2, source, shift[:, 0], shift[:, 1], shift[:, 2]])
    return target[order], source[order], shift[order]


class ReferenceRadiusGraph(nn.Module):
    """``forward(pos [N,3], cell [B,3,3], pbc [B,3], ptr [B+1]) -> (edge_index [2,E], shifts [E,3], counts [B])``
    by :func:`radius_graph_reference`, with the cutoff (Å), neighbour cap and self-image rule fixed."""

    def __init__(self, cutoff: float, max_neighbors: int = 0, self_images: str = "all"):
        super().__init__()
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)
        self.self_images = str(self_images)

    def forward(self, pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return radius_graph_reference(pos, cell, pbc, ptr, self.cutoff, self.max_neighbors, self.self_images)


class CompiledRadiusGraph(ReferenceRadiusGraph):
    """As :class:`ReferenceRadiusGraph`, by ``torch.ops.e3relax.radius_graph_pbc`` (the CPU or CUDA kernel
    by the inputs' device; the kernel validates its inputs). The op takes the self-image rule as an
    integer (:func:`self_image_mode`)."""

    def __init__(self, cutoff: float, max_neighbors: int = 0, self_images: str = "all"):
        super().__init__(cutoff, max_neighbors, self_images)
        self.self_image_mode = self_image_mode(self_images)

    def forward(self, pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return torch.ops.e3relax.radius_graph_pbc(pos, cell, pbc, ptr, self.cutoff, self.max_neighbors,
                                                  self.self_image_mode)


#: A batch whose expected number of candidate pairs (before any neighbour cap) exceeds this is refused
#: before anything is allocated: ~5 GB of candidates. The largest graphs we build (97,556 atoms at
#: 6 Å) have 7.6M pairs.
MAX_CANDIDATE_PAIRS = 100_000_000


def check_pair_budget(pos: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor, cutoff: float) -> None:
    """Raise ``ValueError`` for a non-finite or non-positive cutoff, or when the expected pair count
    (atoms x density x sphere volume for periodic structures, n^2 otherwise) of a structure or of the
    batch exceeds :data:`MAX_CANDIDATE_PAIRS`."""
    if not math.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be positive and finite (Å), got {cutoff}")
    sizes = (ptr[1:] - ptr[:-1]).double().cpu()
    volumes = torch.linalg.det(cell.detach().double().cpu()).abs()
    sphere = 4.0 / 3.0 * math.pi * cutoff ** 3
    periodic = pbc.detach().cpu().any(dim=1)
    expected = torch.where(periodic, sizes * sizes * sphere / volumes.clamp(min=1e-12), sizes * sizes)
    if expected.numel() and (float(expected.max()) > MAX_CANDIDATE_PAIRS or float(expected.sum()) > MAX_CANDIDATE_PAIRS):
        b = int(expected.argmax())
        raise ValueError(f"structure {b}: field 'cell' is too small for cutoff {cutoff} Å (or the batch too large): "
                         f"about {float(expected[b]):.3g} candidate pairs ({float(expected.sum()):.3g} in the batch), "
                         "over the bound of "
                         f"{MAX_CANDIDATE_PAIRS:.0e} (e3relax_fast.ops.radius_graph.MAX_CANDIDATE_PAIRS): "
                         "a smaller cutoff, or smaller batches")


def register_fake_kernel() -> None:
    """Shapes of ``torch.ops.e3relax.radius_graph_pbc`` for FakeTensor tracing (torch.compile, export):
    the edge count is data-dependent, so it is a fresh dynamic size."""
    if getattr(register_fake_kernel, "done", False) or not hasattr(torch.ops.e3relax, "radius_graph_pbc"):
        return

    @torch.library.register_fake("e3relax::radius_graph_pbc")
    def _(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images):
        num_edges = torch.library.get_ctx().new_dynamic_size()
        return (pos.new_empty((2, num_edges), dtype=torch.long),
                pos.new_empty((num_edges, 3), dtype=torch.long),
                ptr.new_empty((ptr.shape[0] - 1,), dtype=torch.long))

    register_fake_kernel.done = True  # type: ignore[attr-defined]
