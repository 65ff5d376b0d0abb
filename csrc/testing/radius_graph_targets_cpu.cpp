// Test-only op library e3relax_fast._testing_ops (built beside _C, loaded only by the tests through
// e3relax_fast.testing.load_testing_ops; production never loads it). Its one op,
// e3relax_testing::radius_graph_targets, runs the CUDA radius-graph algorithm on the CPU: one task per
// target atom (functions in e3relax/radius_graph_target.h, cell lists and bookkeeping built by ATen in
// e3relax/radius_graph_targets_plan.h) under at::parallel_for, so the test suite checks on any machine
// the code that the GPU runs. Schema and output (order and values): those of e3relax::radius_graph_pbc
// (csrc/ops.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "e3relax/radius_graph_target.h"
#include "e3relax/radius_graph_targets_plan.h"

namespace e3relax {
namespace {

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run(const TargetPlan& plan, double cutoff, int64_t max_neighbors,
                                                   int64_t self_images) {
  const int64_t n_atoms = plan.pos.size(0);
  const scalar_t cutoff_sq = static_cast<scalar_t>(cutoff * cutoff);
  const scalar_t* pos = plan.pos.data_ptr<scalar_t>();
  const scalar_t* cell = plan.cell.data_ptr<scalar_t>();
  const bool* pbc = plan.pbc.data_ptr<bool>();
  const int64_t* ptr = plan.ptr.data_ptr<int64_t>();
  const int64_t* structure = plan.structure.data_ptr<int64_t>();
  const TargetGraphArgs g = plan.args(max_neighbors, self_images);
  auto candidate_counts = at::empty({n_atoms}, plan.ptr.options());
  int64_t* cc = candidate_counts.data_ptr<int64_t>();
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) cc[i] = scan_target<false>(g, pos, cell, i, cutoff_sq, static_cast<Candidate<scalar_t>*>(nullptr));
  });
  auto [candidate_offsets, total] = exclusive_offsets(candidate_counts);
  const int64_t* co = candidate_offsets.data_ptr<int64_t>();
  std::vector<Candidate<scalar_t>> candidates(static_cast<size_t>(total));
  auto edge_counts = at::empty({n_atoms}, plan.ptr.options());
  int64_t* ec = edge_counts.data_ptr<int64_t>();
  auto finalize = [&](int64_t i, int64_t* source, int64_t* target, int64_t* shift) {
    const int64_t b = structure[i], start = ptr[b];
    return finalize_target(candidates.data() + co[i], cc[i], max_neighbors, self_images, pos + 3 * start, i - start,
                           cell + 9 * b, pbc + 3 * b, start, source, target, shift);
  };
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Candidate<scalar_t>* segment = candidates.data() + co[i];
      scan_target<true>(g, pos, cell, i, cutoff_sq, segment);
      insertion_sort_candidates(segment, cc[i]);
      ec[i] = finalize(i, nullptr, nullptr, nullptr);
    }
  });
  auto [edge_offsets, num_edges] = exclusive_offsets(edge_counts);
  const int64_t* eo = edge_offsets.data_ptr<int64_t>();
  auto edge_index = at::empty({2, num_edges}, plan.ptr.options());
  auto shifts = at::empty({num_edges, 3}, plan.ptr.options());
  int64_t* source = edge_index.data_ptr<int64_t>();
  int64_t* target = source + num_edges;
  int64_t* shift = shifts.data_ptr<int64_t>();
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) finalize(i, source + eo[i], target + eo[i], shift + 3 * eo[i]);
  });
  return {edge_index, shifts, counts_per_structure(plan, edge_counts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> radius_graph_targets_cpu(const at::Tensor& pos, const at::Tensor& cell,
                                                                        const at::Tensor& pbc, const at::Tensor& ptr,
                                                                        double cutoff, int64_t max_neighbors,
                                                                        int64_t self_images) {
  const auto plan = plan_targets(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "radius_graph_targets_cpu", [&] {
    out = run<scalar_t>(plan, cutoff, max_neighbors, self_images);
  });
  return out;
}

}  // namespace
}  // namespace e3relax

// The schema lives here, not in csrc/ops.cpp: this library is a test seam, not part of the op library.
TORCH_LIBRARY(e3relax_testing, m) {
  m.def(
      "radius_graph_targets(Tensor pos, Tensor cell, Tensor pbc, Tensor ptr, float cutoff, int max_neighbors, "
      "int self_images) -> (Tensor edge_index, Tensor shifts, Tensor counts)");
}

TORCH_LIBRARY_IMPL(e3relax_testing, CPU, m) { m.impl("radius_graph_targets", &e3relax::radius_graph_targets_cpu); }
