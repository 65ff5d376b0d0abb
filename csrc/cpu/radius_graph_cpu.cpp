// radius_graph_pbc on the CPU.
//
// Algorithm: one call for a whole batch. Phase 1 (parallel over structures) builds a cell list per
// structure over its fractional box: periodic axes are wrapped into [0, 1) (the integer part is kept to
// rebuild the shift), non-periodic axes are binned over the atoms' extent; bins are about half a cutoff
// wide in perpendicular distance, and a structure whose lattice vector is shorter than the cutoff simply
// gets one bin on that axis and several image layers. Phase 2 (parallel over chunks of target atoms of the
// flat batch) scans, for each target, every bin within reach, on every periodic image the cutoff needs,
// and keeps the pairs with d2 < cutoff^2 (arithmetic fixed in radius_graph_common.h). Work is linear in
// the number of atoms for a fixed density.
//
// Memory layout: pos [N,3], cell [B,3,3] row-major (rows are lattice vectors), contiguous. Each chunk of
// targets writes its edges to its own buffer, in target order; buffers are then concatenated, so the
// output is sorted by target, then (per target, std::sort) by distance, source and shift. No atomics,
// no shared writes: identical output for any number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "e3relax/radius_graph_checks.h"
#include "e3relax/radius_graph_common.h"

namespace e3relax {
namespace {

constexpr double kMaxImages = 200000.0;   // the same bound as the PyTorch reference
constexpr double kBinsPerCutoff = 2.0;    // bin width ~ cutoff / 2
constexpr int64_t kTargetsPerTask = 64;

struct Grid {
  int64_t start = 0;
  int64_t count = 0;
  bool periodic[3] = {true, true, true};
  int bins[3] = {1, 1, 1};
  double reach[3] = {0.0, 0.0, 0.0};  // the cutoff in bin widths along each axis
  std::vector<int64_t> bin_start;  // [num_bins + 1]
  std::vector<int64_t> bin_atoms;  // local atom indices grouped by bin
  std::vector<double> bin_cart;    // [count * 3] wrapped Cartesian positions, in bin_atoms order
  double cell[9];                  // the cell in double, for image offsets of the prefilter
  std::vector<double> atom_place;  // [count * 3] position in units of bin widths
  std::vector<int> wrap;           // [count * 3] integer part removed on periodic axes
};

struct Edge {
  int64_t source;
  int64_t target;
  int shift[3];
};

template <typename scalar_t>
void build_grid(Grid& grid, int64_t b, const scalar_t* pos, const scalar_t* cell_s, const bool* pbc,
                int64_t start, int64_t count, double cutoff) {
  grid.start = start;
  grid.count = count;
  double m[9];
  for (int k = 0; k < 9; ++k) m[k] = static_cast<double>(cell_s[k]);
  // inverse of the row-major cell: frac = pos @ inverse; column k of the inverse is reciprocal vector b_k.
  const double c00 = m[4] * m[8] - m[5] * m[7], c01 = m[5] * m[6] - m[3] * m[8], c02 = m[3] * m[7] - m[4] * m[6];
  const double det = m[0] * c00 + m[1] * c01 + m[2] * c02;
  double row_norms = 1.0;
  for (int r = 0; r < 3; ++r) row_norms *= std::sqrt(m[3 * r] * m[3 * r] + m[3 * r + 1] * m[3 * r + 1] + m[3 * r + 2] * m[3 * r + 2]);
  TORCH_CHECK_VALUE(std::isfinite(det) && std::abs(det) >= 1e-6 * row_norms, "structure ", b,
                    ": field 'cell' is singular (lattice vectors are linearly dependent or zero)");
  const double inv[9] = {c00 / det, (m[2] * m[7] - m[1] * m[8]) / det, (m[1] * m[5] - m[2] * m[4]) / det,
                         c01 / det, (m[0] * m[8] - m[2] * m[6]) / det, (m[2] * m[3] - m[0] * m[5]) / det,
                         c02 / det, (m[1] * m[6] - m[0] * m[7]) / det, (m[0] * m[4] - m[1] * m[3]) / det};
  double rho[3];  // the cutoff in fractional units along each axis, with a margin for rounding
  double images = 1.0;
  for (int k = 0; k < 3; ++k) {
    grid.periodic[k] = pbc[k];
    const double recip = std::sqrt(inv[k] * inv[k] + inv[3 + k] * inv[3 + k] + inv[6 + k] * inv[6 + k]);
    rho[k] = cutoff * recip * (1.0 + 1e-10) + 1e-12;
    if (pbc[k]) images *= 2.0 * std::ceil(rho[k] + 1.0) + 1.0;
  }
  TORCH_CHECK_VALUE(images <= kMaxImages, "structure ", b, ": field 'cell' is too small for cutoff ", cutoff,
                    " Å: the radius graph would need about ", images,
                    " periodic images (a lattice vector is far shorter than the cutoff)");

  std::vector<double> frac(count * 3);
  double low[3], high[3];
  for (int k = 0; k < 3; ++k) {
    low[k] = std::numeric_limits<double>::infinity();
    high[k] = -low[k];
  }
  grid.wrap.assign(count * 3, 0);
  for (int64_t a = 0; a < count; ++a) {
    const scalar_t* p = pos + (start + a) * 3;
    for (int k = 0; k < 3; ++k) {
      double f = static_cast<double>(p[0]) * inv[k] + static_cast<double>(p[1]) * inv[3 + k] +
                 static_cast<double>(p[2]) * inv[6 + k];
      if (grid.periodic[k]) {
        const double w = std::floor(f);
        grid.wrap[a * 3 + k] = static_cast<int>(w);
        f -= w;
      }
      frac[a * 3 + k] = f;
      low[k] = std::min(low[k], f);
      high[k] = std::max(high[k], f);
    }
  }
  double origin[3], width[3];
  double total_bins = 1.0;
  for (int k = 0; k < 3; ++k) {
    const double extent = grid.periodic[k] ? 1.0 : high[k] - low[k];
    origin[k] = grid.periodic[k] ? 0.0 : low[k];
    const double wanted = std::floor(kBinsPerCutoff * extent / rho[k]);
    grid.bins[k] = static_cast<int>(std::max(1.0, std::min(wanted, 1024.0)));
    total_bins *= grid.bins[k];
  }
  // Sparse structures (a few atoms in a huge box) get coarser bins rather than millions of empty ones.
  const double max_bins = std::max(27.0, 2.0 * static_cast<double>(count));
  while (total_bins > max_bins) {
    const int k = static_cast<int>(std::max_element(grid.bins, grid.bins + 3) - grid.bins);
    total_bins /= grid.bins[k];
    grid.bins[k] = std::max(1, grid.bins[k] / 2);
    total_bins *= grid.bins[k];
  }
  for (int k = 0; k < 3; ++k) {
    const double extent = grid.periodic[k] ? 1.0 : high[k] - low[k];
    width[k] = extent > 0.0 ? extent / grid.bins[k] : 1.0;
    grid.reach[k] = rho[k] / width[k];
  }
  const int64_t num_bins = static_cast<int64_t>(grid.bins[0]) * grid.bins[1] * grid.bins[2];
  grid.atom_place.assign(count * 3, 0.0);
  std::vector<int64_t> flat_bin(count);
  grid.bin_start.assign(num_bins + 1, 0);
  for (int64_t a = 0; a < count; ++a) {
    int c[3];
    for (int k = 0; k < 3; ++k) {
      grid.atom_place[a * 3 + k] = (frac[a * 3 + k] - origin[k]) / width[k];
      c[k] = static_cast<int>(std::floor(grid.atom_place[a * 3 + k]));
      c[k] = std::min(std::max(c[k], 0), grid.bins[k] - 1);
    }
    flat_bin[a] = (static_cast<int64_t>(c[0]) * grid.bins[1] + c[1]) * grid.bins[2] + c[2];
    grid.bin_start[flat_bin[a] + 1] += 1;
  }
  for (int64_t bin = 0; bin < num_bins; ++bin) grid.bin_start[bin + 1] += grid.bin_start[bin];
  grid.bin_atoms.assign(count, 0);
  std::vector<int64_t> fill(grid.bin_start.begin(), grid.bin_start.end() - 1);
  for (int64_t a = 0; a < count; ++a) grid.bin_atoms[fill[flat_bin[a]]++] = a;  // ascending within a bin
  // Wrapped positions, contiguous per bin: the cheap distance prefilter of the pair loop reads them.
  for (int k = 0; k < 9; ++k) grid.cell[k] = m[k];
  grid.bin_cart.assign(count * 3, 0.0);
  for (int64_t slot = 0; slot < count; ++slot) {
    const int64_t a = grid.bin_atoms[slot];
    const int* w = &grid.wrap[a * 3];
    const scalar_t* p = pos + (start + a) * 3;
    for (int k = 0; k < 3; ++k) {
      grid.bin_cart[slot * 3 + k] = static_cast<double>(p[k]) - (w[0] * m[k] + w[1] * m[3 + k] + w[2] * m[6 + k]);
    }
  }
}

template <typename scalar_t>
void target_edges(const Grid& grid, int64_t local_target, const scalar_t* pos, const scalar_t* cell,
                  scalar_t cutoff_sq, int64_t max_neighbors, int64_t self_images,
                  std::vector<Candidate<scalar_t>>& candidates, std::vector<Edge>& out) {
  candidates.clear();
  const int64_t target = grid.start + local_target;
  const scalar_t* pos_i = pos + target * 3;
  const int* wi = &grid.wrap[local_target * 3];
  double target_cart[3];  // the target's wrapped position, as stored for the prefilter
  for (int k = 0; k < 3; ++k) {
    target_cart[k] = static_cast<double>(pos_i[k]) - (wi[0] * grid.cell[k] + wi[1] * grid.cell[3 + k] + wi[2] * grid.cell[6 + k]);
  }
  // Generous margin (1%, above float32 rounding of large coordinates): the prefilter may only let
  // through more pairs than the exact test, never fewer.
  const double prefilter_sq = static_cast<double>(cutoff_sq) * 1.01 + 1e-6;
  // Bins that can hold an image within the cutoff, from the target's own place (not its bin's edges).
  int lo[3], hi[3];
  for (int k = 0; k < 3; ++k) {
    const double place = grid.atom_place[local_target * 3 + k];
    lo[k] = static_cast<int>(std::floor(place - grid.reach[k]));
    hi[k] = static_cast<int>(std::floor(place + grid.reach[k]));
    if (!grid.periodic[k]) {
      lo[k] = std::max(lo[k], 0);
      hi[k] = std::min(hi[k], grid.bins[k] - 1);
    }
  }
  for (int b0 = lo[0]; b0 <= hi[0]; ++b0) {
    int c0 = b0, m0 = 0;
    if (grid.periodic[0]) { m0 = floor_div(c0, grid.bins[0]); c0 -= m0 * grid.bins[0]; }
    for (int b1 = lo[1]; b1 <= hi[1]; ++b1) {
      int c1 = b1, m1 = 0;
      if (grid.periodic[1]) { m1 = floor_div(c1, grid.bins[1]); c1 -= m1 * grid.bins[1]; }
      for (int b2 = lo[2]; b2 <= hi[2]; ++b2) {
        int c2 = b2, m2 = 0;
        if (grid.periodic[2]) { m2 = floor_div(c2, grid.bins[2]); c2 -= m2 * grid.bins[2]; }
        const int64_t bin = (static_cast<int64_t>(c0) * grid.bins[1] + c1) * grid.bins[2] + c2;
        // Cheap prefilter on wrapped positions (double); pairs that pass are tested with the exact
        // shared arithmetic, which alone decides (so the result does not depend on the prefilter).
        const double* g = grid.cell;
        const double ox = m0 * g[0] + m1 * g[3] + m2 * g[6] - target_cart[0];
        const double oy = m0 * g[1] + m1 * g[4] + m2 * g[7] - target_cart[1];
        const double oz = m0 * g[2] + m1 * g[5] + m2 * g[8] - target_cart[2];
        const int64_t slot_end = grid.bin_start[bin + 1];
        for (int64_t slot = grid.bin_start[bin]; slot < slot_end; ++slot) {
          const double* q = &grid.bin_cart[slot * 3];
          const double rx = q[0] + ox, ry = q[1] + oy, rz = q[2] + oz;
          if (rx * rx + ry * ry + rz * rz > prefilter_sq) continue;
          const int64_t local_source = grid.bin_atoms[slot];
          const int* wj = &grid.wrap[local_source * 3];
          const int s0 = m0 - wj[0] + wi[0], s1 = m1 - wj[1] + wi[1], s2 = m2 - wj[2] + wi[2];
          if (local_source == local_target && s0 == 0 && s1 == 0 && s2 == 0) continue;
          const int64_t source = grid.start + local_source;
          const scalar_t d2v = pair_distance_sq(pos + source * 3, pos_i, cell, s0, s1, s2);
          if (d2v < cutoff_sq) candidates.push_back({d2v, source, {s0, s1, s2}});
        }
      }
    }
  }
  const auto by_distance = [](const Candidate<scalar_t>& x, const Candidate<scalar_t>& y) {
    return candidate_less(x, y);
  };
  std::sort(candidates.begin(), candidates.end(), by_distance);
  if (max_neighbors > 0 && static_cast<int64_t>(candidates.size()) > max_neighbors) candidates.resize(max_neighbors);
  if (self_images == kSelfImagesPaper) {
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [&](const Candidate<scalar_t>& c) { return c.source == target; }),
                     candidates.end());
    const size_t kept = candidates.size();
    for (const auto& s : kPaperSelfShifts) {
      if ((s[0] && !grid.periodic[0]) || (s[1] && !grid.periodic[1]) || (s[2] && !grid.periodic[2])) continue;
      candidates.push_back({pair_distance_sq(pos_i, pos_i, cell, s[0], s[1], s[2]), target, {s[0], s[1], s[2]}});
    }
    std::sort(candidates.begin() + kept, candidates.end(), by_distance);
    std::inplace_merge(candidates.begin(), candidates.begin() + kept, candidates.end(), by_distance);
  }
  for (const auto& c : candidates) out.push_back({c.source, target, {c.shift[0], c.shift[1], c.shift[2]}});
}

template <typename scalar_t>
std::vector<std::vector<Edge>> find_edges(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                                          const std::vector<int64_t>& ptr, double cutoff, int64_t max_neighbors,
                                          int64_t self_images) {
  const int64_t num_structures = static_cast<int64_t>(ptr.size()) - 1;
  const int64_t num_atoms = ptr.back();
  const scalar_t* pos_data = pos.data_ptr<scalar_t>();
  const scalar_t* cell_data = cell.data_ptr<scalar_t>();
  const bool* pbc_data = pbc.data_ptr<bool>();
  std::vector<Grid> grids(num_structures);
  at::parallel_for(0, num_structures, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      build_grid<scalar_t>(grids[b], b, pos_data, cell_data + 9 * b, pbc_data + 3 * b, ptr[b], ptr[b + 1] - ptr[b],
                           cutoff);
    }
  });
  const int64_t num_tasks = (num_atoms + kTargetsPerTask - 1) / kTargetsPerTask;
  std::vector<std::vector<Edge>> buffers(num_tasks);
  const scalar_t cutoff_sq = static_cast<scalar_t>(cutoff * cutoff);
  at::parallel_for(0, num_tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<Candidate<scalar_t>> candidates;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = task * kTargetsPerTask, last = std::min(num_atoms, first + kTargetsPerTask);
      int64_t b = std::upper_bound(ptr.begin(), ptr.end(), first) - ptr.begin() - 1;
      for (int64_t target = first; target < last; ++target) {
        while (target >= ptr[b + 1]) ++b;
        target_edges<scalar_t>(grids[b], target - ptr[b], pos_data, cell_data + 9 * b, cutoff_sq, max_neighbors,
                               self_images, candidates, buffers[task]);
      }
    }
  });
  return buffers;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> radius_graph_pbc_cpu(const at::Tensor& pos_in, const at::Tensor& cell_in,
                                                                    const at::Tensor& pbc_in, const at::Tensor& ptr_in,
                                                                    double cutoff, int64_t max_neighbors,
                                                                    int64_t self_images) {
  check_radius_graph_args(pos_in, cell_in, pbc_in, ptr_in, cutoff, max_neighbors, self_images);
  const at::Tensor pos = pos_in.contiguous(), cell = cell_in.contiguous(), pbc = pbc_in.contiguous();
  const at::Tensor ptr_tensor = ptr_in.contiguous();
  const int64_t* ptr_data = ptr_tensor.data_ptr<int64_t>();
  std::vector<int64_t> ptr(ptr_data, ptr_data + ptr_tensor.numel());
  const int64_t num_structures = static_cast<int64_t>(ptr.size()) - 1;
  TORCH_CHECK_VALUE(ptr[0] == 0, "field 'ptr' must start at 0, got ", ptr[0]);
  TORCH_CHECK_VALUE(ptr.back() == pos.size(0), "field 'ptr' ends at ", ptr.back(), " but 'pos' has ", pos.size(0),
                    " atoms");
  for (int64_t b = 0; b < num_structures; ++b) {
    TORCH_CHECK_VALUE(ptr[b + 1] >= ptr[b], "structure ", b, ": field 'ptr' decreases (", ptr[b], " -> ", ptr[b + 1], ")");
  }
  TORCH_CHECK_VALUE(at::isfinite(pos).all().item<bool>(), "field 'pos' is not finite (check the structures)");
  TORCH_CHECK_VALUE(at::isfinite(cell).all().item<bool>(), "field 'cell' is not finite (check the structures)");

  std::vector<std::vector<Edge>> buffers;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "radius_graph_pbc_cpu", [&] {
    buffers = find_edges<scalar_t>(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  });
  std::vector<int64_t> offsets(buffers.size() + 1, 0);
  for (size_t t = 0; t < buffers.size(); ++t) offsets[t + 1] = offsets[t] + static_cast<int64_t>(buffers[t].size());
  const int64_t num_edges = offsets.back();
  const auto long_options = pos.options().dtype(at::kLong);
  at::Tensor edge_index = at::empty({2, num_edges}, long_options);
  at::Tensor shifts = at::empty({num_edges, 3}, long_options);
  at::Tensor counts = at::zeros({num_structures}, long_options);
  int64_t* sources = edge_index.data_ptr<int64_t>();
  int64_t* targets = sources + num_edges;
  int64_t* shift_data = shifts.data_ptr<int64_t>();
  at::parallel_for(0, static_cast<int64_t>(buffers.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t e = offsets[t];
      for (const Edge& edge : buffers[t]) {
        sources[e] = edge.source;
        targets[e] = edge.target;
        shift_data[3 * e] = edge.shift[0];
        shift_data[3 * e + 1] = edge.shift[1];
        shift_data[3 * e + 2] = edge.shift[2];
        ++e;
      }
    }
  });
  // Edges are sorted by target and structures own contiguous atom ranges: count by binary search.
  int64_t* count_data = counts.data_ptr<int64_t>();
  for (int64_t b = 0; b < num_structures; ++b) {
    const int64_t lo = std::lower_bound(targets, targets + num_edges, ptr[b]) - targets;
    const int64_t hi = std::lower_bound(targets, targets + num_edges, ptr[b + 1]) - targets;
    count_data[b] = hi - lo;
  }
  return {edge_index, shifts, counts};
}

TORCH_LIBRARY_IMPL(e3relax, CPU, m) { m.impl("radius_graph_pbc", &radius_graph_pbc_cpu); }

}  // namespace e3relax
