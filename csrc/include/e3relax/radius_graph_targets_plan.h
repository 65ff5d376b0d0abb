// Device-agnostic set-up and bookkeeping of the per-target radius graph (radius_graph_target.h): the
// cell lists of every structure, the two prefix sums and the output assembly, as ATen ops on the
// tensors' own device, so the CPU harness and the CUDA kernel share them and neither makes a host round
// trip per structure (four syncs in all: the data checks, the image check, the image and bin totals, and
// the candidate and edge totals, to allocate).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "e3relax/radius_graph_checks.h"
#include "e3relax/radius_graph_target.h"

namespace e3relax {

struct TargetPlan {
  at::Tensor pos;        // [N,3] contiguous, input dtype
  at::Tensor cell;       // [B,3,3] contiguous, input dtype
  at::Tensor pbc;        // [B,3] bool contiguous
  at::Tensor ptr;        // [B+1] long
  at::Tensor structure;  // [N] long: structure of each atom
  // cell lists (TargetGraphArgs in radius_graph_target.h says what each holds)
  at::Tensor place, cart, wrap;      // [N,3] double, double, int32
  at::Tensor reach, bins, first_bin;  // [B,3] double, [B,3] long, [B] long
  at::Tensor bin_start;               // [total bins + 1] long
  at::Tensor image_cart, image_atom, image_shift;  // [I,3] double, [I] int32, [I,3] int32

  TargetGraphArgs args(int64_t max_neighbors, int64_t self_images) const {
    return {ptr.data_ptr<int64_t>(),       structure.data_ptr<int64_t>(),  pbc.data_ptr<bool>(),
            place.data_ptr<double>(),      cart.data_ptr<double>(),        wrap.data_ptr<int32_t>(),
            reach.data_ptr<double>(),      bins.data_ptr<int64_t>(),       first_bin.data_ptr<int64_t>(),
            bin_start.data_ptr<int64_t>(), image_cart.data_ptr<double>(),  image_atom.data_ptr<int32_t>(),
            image_shift.data_ptr<int32_t>(), pos.size(0), max_neighbors, self_images};
  }
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

// Exclusive prefix sum along dim 0 (a zero first, the total last).
inline at::Tensor exclusive_cumsum(const at::Tensor& values) {
  auto out = at::zeros({values.numel() + 1}, values.options());
  if (values.numel() > 0) out.slice(0, 1).copy_(at::cumsum(values, 0));
  return out;
}

// What the steps of plan_targets hand on to each other (all on the tensors' device).
struct PlanGeometry {
  at::Tensor cell64, inv, rho;      // [B,3,3] double, [B,3,3], [B,3]: cells, inverses, reach rho_k
  at::Tensor frac_w, periodic;      // [N,3] wrapped fractional coordinates, [N,3] bool
  at::Tensor first, per_axis;       // [N,3] long: first image shift, images along each axis
  at::Tensor per_atom, image_offsets;  // [N] images per atom, [N+1] their exclusive prefix sum
  at::Tensor origin, inv_width;     // [B,3] lower corner of the padded box, bins per fractional unit
};

// The inputs as the kernels read them, the structure of each atom, and rho_k = cutoff |b_k| (widened by
// 1e-4 so that rounding never hides an image), refusing cells that need more than kMaxImages images.
inline PlanGeometry plan_lattice(TargetPlan& plan, const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                                 const at::Tensor& ptr, double cutoff) {
  constexpr double kMaxImages = 200000.0;  // as the reference and the CPU kernel
  constexpr double kReachMargin = 1e-4;
  plan.pos = pos.contiguous();
  plan.cell = cell.to(pos.scalar_type()).contiguous();
  plan.pbc = pbc.to(at::kBool).contiguous();
  plan.ptr = ptr.to(at::kLong).contiguous();
  const int64_t num_structures = plan.ptr.numel() - 1;
  const auto sizes = plan.ptr.slice(0, 1) - plan.ptr.slice(0, 0, num_structures);
  plan.structure = at::repeat_interleave(at::arange(num_structures, plan.ptr.options()), sizes, /*dim=*/0,
                                         /*output_size=*/plan.pos.size(0));
  PlanGeometry geometry;
  geometry.cell64 = plan.cell.to(at::kDouble);
  geometry.inv = num_structures > 0 ? at::linalg_inv(geometry.cell64) : geometry.cell64.clone();
  geometry.rho = cutoff * at::linalg_vector_norm(geometry.inv, 2, {1}) * (1.0 + kReachMargin) + 1e-12;  // [B,3]
  const auto images = at::where(plan.pbc, 2 * at::ceil(geometry.rho + 1) + 1, at::ones_like(geometry.rho)).prod(1);
  const auto too_many = images > kMaxImages;
  if (num_structures > 0 && too_many.any().item<bool>()) {
    const int64_t b = too_many.to(at::kInt).argmax().item<int64_t>();
    TORCH_CHECK_VALUE(false, "structure ", b, ": field 'cell' is too small for cutoff ", cutoff,
                      " Å: the radius graph would need about ", images[b].item<double>(),
                      " periodic images (a lattice vector is far shorter than the cutoff)");
  }
  return geometry;
}

// Atoms: wrapped fractional and Cartesian positions, the padded box of each structure ([-rho, 1 + rho)
// on periodic axes, the atoms' extent on the others) and the image shifts of each atom (s_k from
// ceil(-rho - f) to floor(1 + rho - f) on periodic axes, 0 elsewhere).
inline void plan_atoms(TargetPlan& plan, PlanGeometry& geometry, at::Tensor& extent) {
  const auto& structure = plan.structure;
  const int64_t num_structures = plan.ptr.numel() - 1;
  const auto frac = at::bmm(plan.pos.to(at::kDouble).unsqueeze(1), geometry.inv.index_select(0, structure)).squeeze(1);
  geometry.periodic = plan.pbc.index_select(0, structure);  // [N,3]
  const auto whole = at::where(geometry.periodic, at::floor(frac), at::zeros_like(frac));
  geometry.frac_w = frac - whole;
  plan.wrap = whole.to(at::kInt).contiguous();
  plan.cart = (plan.pos.to(at::kDouble) - at::bmm(whole.unsqueeze(1), geometry.cell64.index_select(0, structure)).squeeze(1))
                  .contiguous();
  const auto index = structure.unsqueeze(1).expand({-1, 3});
  auto low = at::full({num_structures, 3}, INFINITY, frac.options()).scatter_reduce(0, index, geometry.frac_w, "amin");
  auto high = at::full({num_structures, 3}, -INFINITY, frac.options()).scatter_reduce(0, index, geometry.frac_w, "amax");
  const auto occupied = ((plan.ptr.slice(0, 1) - plan.ptr.slice(0, 0, num_structures)) > 0).unsqueeze(1);
  low = at::where(occupied, low, at::zeros_like(low));
  high = at::where(occupied, high, at::zeros_like(high));
  geometry.origin = at::where(plan.pbc, -geometry.rho, low);
  extent = at::where(plan.pbc, 1 + 2 * geometry.rho, high - low);
  const auto rho_atom = geometry.rho.index_select(0, structure);
  geometry.first = at::where(geometry.periodic, at::ceil(-rho_atom - geometry.frac_w), at::zeros_like(frac)).to(at::kLong);
  const auto last = at::where(geometry.periodic, at::floor(1 + rho_atom - geometry.frac_w), at::zeros_like(frac)).to(at::kLong);
  geometry.per_axis = (last - geometry.first + 1).clamp_min(0);  // [N,3]
  geometry.per_atom = geometry.per_axis.prod(1);                  // [N]
  geometry.image_offsets = exclusive_cumsum(geometry.per_atom);
}

// Bins at least rho wide, at most 1024 per axis; a sparse structure's largest axis is halved while it
// has more than max(27, 2 * images) bins (the CPU kernel's rule, vectorised over structures). Returns
// the totals of images and bins (one host sync for both, to allocate).
inline std::tuple<int64_t, int64_t> plan_bins(TargetPlan& plan, PlanGeometry& geometry, const at::Tensor& extent) {
  const int64_t num_structures = plan.ptr.numel() - 1;
  const auto images_per_structure =
      at::zeros({num_structures}, geometry.per_atom.options()).index_add_(0, plan.structure, geometry.per_atom);
  auto bins = at::clamp(at::floor(extent / geometry.rho), 1, 1024).to(at::kLong);
  const auto max_bins = at::clamp_min(2 * images_per_structure, 27);
  const auto axes = at::arange(3, bins.options());
  for (int halving = 0; halving < 32; ++halving) {
    const auto over = (bins.prod(1) > max_bins).unsqueeze(1);
    const auto largest = axes.unsqueeze(0) == bins.argmax(1, /*keepdim=*/true);
    bins = at::where(over & largest, at::clamp_min(at::div(bins, 2, "floor"), 1), bins);
  }
  const auto width = at::where(extent > 0, extent / bins, at::ones_like(extent));
  geometry.inv_width = 1.0 / width;
  plan.reach = (geometry.rho * geometry.inv_width).contiguous();
  plan.bins = bins.contiguous();
  const auto bin_offsets = exclusive_cumsum(bins.prod(1));
  plan.first_bin = bin_offsets.slice(0, 0, num_structures).contiguous();
  plan.place = ((geometry.frac_w - geometry.origin.index_select(0, plan.structure)) *
                geometry.inv_width.index_select(0, plan.structure))
                   .contiguous();
  const auto totals = at::stack({geometry.image_offsets[-1], bin_offsets[-1]}).cpu();
  return {totals[0].item<int64_t>(), totals[1].item<int64_t>()};
}

// Every image, then sorted by bin (stable: images keep the order atom, s0, s1, s2 within a bin).
inline void plan_images(TargetPlan& plan, const PlanGeometry& geometry, int64_t num_images, int64_t num_bins) {
  const auto& per_atom = geometry.per_atom;
  const auto atom_of = at::repeat_interleave(at::arange(plan.pos.size(0), per_atom.options()), per_atom, /*dim=*/0,
                                             /*output_size=*/num_images);
  const auto q = at::arange(num_images, per_atom.options()) - geometry.image_offsets.index_select(0, atom_of);
  const auto n = geometry.per_axis.index_select(0, atom_of), s_first = geometry.first.index_select(0, atom_of);
  const auto n1 = n.select(1, 1), n2 = n.select(1, 2);
  const auto shift = at::stack({at::div(q, n1 * n2, "floor"), at::remainder(at::div(q, n2, "floor"), n1),
                                at::remainder(q, n2)}, 1) + s_first;  // [I,3]
  const auto structure_of = plan.structure.index_select(0, atom_of);
  const auto cell_bins = plan.bins.index_select(0, structure_of);
  const auto coordinate = at::floor((geometry.frac_w.index_select(0, atom_of) + shift -
                                     geometry.origin.index_select(0, structure_of)) *
                                    geometry.inv_width.index_select(0, structure_of))
                              .to(at::kLong);
  const auto c = at::minimum(at::clamp_min(coordinate, 0), cell_bins - 1);
  const auto key = plan.first_bin.index_select(0, structure_of) +
                   (c.select(1, 0) * cell_bins.select(1, 1) + c.select(1, 1)) * cell_bins.select(1, 2) + c.select(1, 2);
  const auto order = std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  plan.bin_start = exclusive_cumsum(at::bincount(key, /*weights=*/{}, /*minlength=*/num_bins)).contiguous();
  const auto atom_sorted = atom_of.index_select(0, order);
  const auto shift_sorted = shift.index_select(0, order);
  const auto structure_sorted = structure_of.index_select(0, order);
  plan.image_cart = (plan.cart.index_select(0, atom_sorted) +
                     at::bmm(shift_sorted.to(at::kDouble).unsqueeze(1), geometry.cell64.index_select(0, structure_sorted))
                         .squeeze(1))
                        .contiguous();
  plan.image_atom = (atom_sorted - plan.ptr.index_select(0, structure_sorted)).to(at::kInt).contiguous();
  plan.image_shift = (shift_sorted - plan.wrap.index_select(0, atom_sorted)).to(at::kInt).contiguous();
}

// The cell lists of the CPU kernel, built with ATen ops on the tensors' own device (no per-structure
// round trip), in the steps above: the lattice, the atoms and their images, the bins, the sorted images.
// Host syncs after the data checks: the image check, and the bin and image totals, to allocate.
inline TargetPlan plan_targets(const at::Tensor& pos, const at::Tensor& cell, const at::Tensor& pbc,
                               const at::Tensor& ptr, double cutoff, int64_t max_neighbors, int64_t self_images) {
  check_radius_graph_args(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  check_radius_graph_data(pos, cell, ptr);
  TargetPlan plan;
  PlanGeometry geometry = plan_lattice(plan, pos, cell, pbc, ptr, cutoff);
  at::Tensor extent;
  plan_atoms(plan, geometry, extent);
  const auto [num_images, num_bins] = plan_bins(plan, geometry, extent);
  plan_images(plan, geometry, num_images, num_bins);
  return plan;
}

// Exclusive prefix sum of per-target counts and the total (one sync).
inline std::tuple<at::Tensor, int64_t> exclusive_offsets(const at::Tensor& counts) {
  auto offsets = exclusive_cumsum(counts);
  return {offsets, offsets[-1].item<int64_t>()};
}

inline at::Tensor counts_per_structure(const TargetPlan& plan, const at::Tensor& edges_per_target) {
  return at::zeros({plan.ptr.numel() - 1}, edges_per_target.options()).index_add_(0, plan.structure, edges_per_target);
}

}  // namespace e3relax
