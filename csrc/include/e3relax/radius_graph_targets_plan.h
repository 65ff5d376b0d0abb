// Device-agnostic set-up and bookkeeping of the per-target radius graph (radius_graph_target.h): the
// image reach of every structure, the two prefix sums and the output assembly, as ATen ops on the
// tensors' own device, so the CPU harness and the CUDA kernel share them and neither makes a host round
// trip per structure (two syncs in all: the candidate and edge totals, to allocate).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "e3relax/radius_graph_checks.h"

namespace e3relax {

struct TargetPlan {
  at::Tensor pos;        // [N,3] contiguous, input dtype
  at::Tensor cell;       // [B,3,3] contiguous, input dtype
  at::Tensor pbc;        // [B,3] bool contiguous
  at::Tensor ptr;        // [B+1] long
  at::Tensor structure;  // [N] long: structure of each atom
  at::Tensor reach;      // [B,3] int32: image reach per axis
};

// Data checks on the tensors' own device, before anything is sized from them: ptr starts at 0, ends at
// N and never decreases, positions and cells are finite, no cell is singular (|det| below 1e-6 of the
// product of its row lengths, the CPU kernel's test). One host sync when all is well; a failure costs
// one more, to name the structure.
inline void check_radius_graph_data(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& ptr) {
  const int64_t num_structures = ptr.numel() - 1;
  const auto sizes = ptr.slice(0, 1) - ptr.slice(0, 0, num_structures);
  const auto cell64 = cell.to(at::kDouble);
  const auto row_lengths = at::linalg_vector_norm(cell64, 2, {2}).prod(1);
  const auto finite_cells = at::isfinite(cell64).flatten(1).all(1);
  const auto det = num_structures > 0 ? at::linalg_det(at::where(finite_cells.view({-1, 1, 1}), cell64,
                                                                at::eye(3, cell64.options())))
                                      : at::zeros({0}, cell64.options());
  const auto singular = finite_cells & (det.abs() < 1e-6 * row_lengths);
  const auto flags = at::stack({ptr[0] != 0, ptr[-1] != pos.size(0), (sizes < 0).any(), at::isfinite(pos).all().logical_not(),
                                finite_cells.all().logical_not(), singular.any()})
                         .cpu();
  const bool* bad = flags.data_ptr<bool>();
  TORCH_CHECK_VALUE(!bad[0], "field 'ptr' must start at 0");
  TORCH_CHECK_VALUE(!bad[1], "field 'ptr' must end at the number of atoms in 'pos' (", pos.size(0), ")");
  if (bad[2]) {
    const int64_t b = (sizes < 0).to(at::kInt).argmax().item<int64_t>();
    TORCH_CHECK_VALUE(false, "structure ", b, ": field 'ptr' decreases");
  }
  TORCH_CHECK_VALUE(!bad[3], "field 'pos' is not finite (check the structures)");
  TORCH_CHECK_VALUE(!bad[4], "field 'cell' is not finite (check the structures)");
  if (bad[5]) {
    const int64_t b = singular.to(at::kInt).argmax().item<int64_t>();
    TORCH_CHECK_VALUE(false, "structure ", b, ": field 'cell' is singular (lattice vectors are linearly dependent or zero)");
  }
}

inline TargetPlan plan_targets(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                               const at::Tensor& ptr, double cutoff, int64_t max_neighbors, int64_t self_images) {
  constexpr double kMaxImages = 200000.0;  // as the reference and the cell-list kernel
  check_radius_graph_args(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  check_radius_graph_data(pos, cell, ptr);
  TargetPlan plan;
  plan.pos = pos.contiguous();
  plan.cell = cell.to(pos.scalar_type()).contiguous();
  plan.pbc = pbc.to(at::kBool).contiguous();
  plan.ptr = ptr.to(at::kLong).contiguous();
  const int64_t num_structures = plan.ptr.numel() - 1;
  const auto sizes = plan.ptr.slice(0, 1) - plan.ptr.slice(0, 0, num_structures);
  plan.structure = at::repeat_interleave(at::arange(num_structures, plan.ptr.options()), sizes, /*dim=*/0,
                                         /*output_size=*/pos.size(0));
  // |n_k| <= cutoff |b_k| + spread of f_k, in double, exactly as the reference computes it
  const auto inv = at::linalg_inv(plan.cell.to(at::kDouble));
  const auto frac = at::bmm(plan.pos.to(at::kDouble).unsqueeze(1), inv.index_select(0, plan.structure)).squeeze(1);
  const auto index = plan.structure.unsqueeze(1).expand({-1, 3});
  auto fmin = at::full({num_structures, 3}, INFINITY, frac.options()).scatter_reduce(0, index, frac, "amin");
  auto fmax = at::full({num_structures, 3}, -INFINITY, frac.options()).scatter_reduce(0, index, frac, "amax");
  const auto spread = at::where(sizes.unsqueeze(1) > 0, fmax - fmin, at::zeros_like(fmax));
  auto reach = at::ceil(cutoff * at::linalg_vector_norm(inv, 2, {1}) + spread);
  reach = at::where(plan.pbc, reach, at::zeros_like(reach));
  const auto images = (2 * reach + 1).prod(1);
  const auto too_many = images > kMaxImages;
  if (too_many.any().item<bool>()) {
    const int64_t b = too_many.to(at::kInt).argmax().item<int64_t>();
    TORCH_CHECK_VALUE(false, "structure ", b, ": field 'cell' is too small for cutoff ", cutoff,
                      ": the radius graph would need ", images[b].item<double>(),
                      " periodic images (a lattice vector is far shorter than the cutoff)");
  }
  plan.reach = reach.to(at::kInt).contiguous();
  return plan;
}

// Exclusive prefix sum of per-target counts and the total (one sync).
inline std::tuple<at::Tensor, int64_t> exclusive_offsets(const at::Tensor& counts) {
  auto offsets = at::zeros({counts.numel() + 1}, counts.options());
  if (counts.numel() > 0) offsets.slice(0, 1).copy_(at::cumsum(counts, 0));
  return {offsets, offsets[-1].item<int64_t>()};
}

inline at::Tensor counts_per_structure(const TargetPlan& plan, const at::Tensor& edges_per_target) {
  return at::zeros({plan.ptr.numel() - 1}, edges_per_target.options()).index_add_(0, plan.structure, edges_per_target);
}

}  // namespace e3relax
