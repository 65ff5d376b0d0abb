// _radius_graph_targets on the CPU: the CUDA radius-graph algorithm (one task per target atom,
// functions in e3relax/radius_graph_target.h, bookkeeping in e3relax/radius_graph_targets_plan.h) run
// by at::parallel_for, so the test suite checks on any machine the code that the GPU runs. Brute force
// over the images of each structure: quadratic in atoms per structure, meant for batches of small
// crystals. Output order and values: those of radius_graph_pbc.
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
  const int* reach = plan.reach.data_ptr<int>();
  auto per_target = [&](int64_t i, auto&& body) {
    const int64_t b = structure[i];
    body(b, pos + 3 * ptr[b], ptr[b + 1] - ptr[b], i - ptr[b]);
  };
  auto candidate_counts = at::empty({n_atoms}, plan.ptr.options());
  int64_t* cc = candidate_counts.data_ptr<int64_t>();
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      per_target(i, [&](int64_t b, const scalar_t* p, int64_t n, int64_t local) {
        cc[i] = count_target(p, n, local, cell + 9 * b, reach + 3 * b, cutoff_sq);
      });
  });
  auto [candidate_offsets, total] = exclusive_offsets(candidate_counts);
  const int64_t* co = candidate_offsets.data_ptr<int64_t>();
  std::vector<Candidate<scalar_t>> candidates(static_cast<size_t>(total));
  auto edge_counts = at::empty({n_atoms}, plan.ptr.options());
  int64_t* ec = edge_counts.data_ptr<int64_t>();
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      per_target(i, [&](int64_t b, const scalar_t* p, int64_t n, int64_t local) {
        Candidate<scalar_t>* segment = candidates.data() + co[i];
        fill_target(p, n, local, cell + 9 * b, reach + 3 * b, cutoff_sq, segment);
        sort_candidates(segment, cc[i]);
        ec[i] = finalize_target(segment, cc[i], max_neighbors, self_images, p, local, cell + 9 * b, pbc + 3 * b,
                                ptr[b], static_cast<int64_t*>(nullptr), static_cast<int64_t*>(nullptr),
                                static_cast<int64_t*>(nullptr));
      });
  });
  auto [edge_offsets, num_edges] = exclusive_offsets(edge_counts);
  const int64_t* eo = edge_offsets.data_ptr<int64_t>();
  auto edge_index = at::empty({2, num_edges}, plan.ptr.options());
  auto shifts = at::empty({num_edges, 3}, plan.ptr.options());
  int64_t* source = edge_index.data_ptr<int64_t>();
  int64_t* target = source + num_edges;
  int64_t* shift = shifts.data_ptr<int64_t>();
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      per_target(i, [&](int64_t b, const scalar_t* p, int64_t n, int64_t local) {
        finalize_target(candidates.data() + co[i], cc[i], max_neighbors, self_images, p, local, cell + 9 * b,
                        pbc + 3 * b, ptr[b], source + eo[i], target + eo[i], shift + 3 * eo[i]);
      });
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

TORCH_LIBRARY_IMPL(e3relax, CPU, m) { m.impl("_radius_graph_targets", &e3relax::radius_graph_targets_cpu); }
