// radius_graph_pbc on CUDA: the cell lists and
// bookkeeping of e3relax/radius_graph_targets_plan.h on the device, around the three launches of
// radius_graph_kernels.cu (count, fill + sort + count kept, write). A few host syncs per call (checks
// and totals, to allocate); none per structure. Compiled only in CUDA builds.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "e3relax/radius_graph_target.h"
#include "e3relax/radius_graph_targets_plan.h"

namespace e3relax {
namespace cuda {
template <typename T>
cudaError_t launch_count(const T*, const T*, TargetGraphArgs, T, int64_t*, cudaStream_t);
template <typename T>
cudaError_t launch_fill(const T*, const T*, TargetGraphArgs, T, const int64_t*, const int64_t*, void*, int64_t*,
                        cudaStream_t);
template <typename T>
cudaError_t launch_write(const T*, const T*, TargetGraphArgs, const int64_t*, const int64_t*, const void*,
                         const int64_t*, int64_t, int64_t*, int64_t*, cudaStream_t);
template <typename T>
size_t candidate_bytes();
}  // namespace cuda

namespace {

void check(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "radius_graph_pbc (CUDA): ", what, " failed: ", cudaGetErrorString(status));
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run(const TargetPlan& plan, double cutoff, int64_t max_neighbors,
                                                   int64_t self_images) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n_atoms = plan.pos.size(0);
  const scalar_t cutoff_sq = static_cast<scalar_t>(cutoff * cutoff);
  const TargetGraphArgs g = plan.args(max_neighbors, self_images);
  const scalar_t* pos = plan.pos.data_ptr<scalar_t>();
  const scalar_t* cell = plan.cell.data_ptr<scalar_t>();
  auto candidate_counts = at::empty({n_atoms}, plan.ptr.options());
  check(cuda::launch_count<scalar_t>(pos, cell, g, cutoff_sq, candidate_counts.data_ptr<int64_t>(), stream), "count");
  auto [candidate_offsets, total] = exclusive_offsets(candidate_counts);
  auto candidates = at::empty({static_cast<int64_t>(total * cuda::candidate_bytes<scalar_t>())},
                              plan.ptr.options().dtype(at::kByte));
  auto edge_counts = at::empty({n_atoms}, plan.ptr.options());
  check(cuda::launch_fill<scalar_t>(pos, cell, g, cutoff_sq, candidate_counts.data_ptr<int64_t>(),
                                    candidate_offsets.data_ptr<int64_t>(), candidates.data_ptr(),
                                    edge_counts.data_ptr<int64_t>(), stream),
        "fill");
  auto [edge_offsets, num_edges] = exclusive_offsets(edge_counts);
  auto edge_index = at::empty({2, num_edges}, plan.ptr.options());
  auto shifts = at::empty({num_edges, 3}, plan.ptr.options());
  check(cuda::launch_write<scalar_t>(pos, cell, g, candidate_counts.data_ptr<int64_t>(),
                                     candidate_offsets.data_ptr<int64_t>(), candidates.data_ptr(),
                                     edge_offsets.data_ptr<int64_t>(), num_edges, edge_index.data_ptr<int64_t>(),
                                     shifts.data_ptr<int64_t>(), stream),
        "write");
  return {edge_index, shifts, counts_per_structure(plan, edge_counts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> radius_graph_cuda(const at::Tensor& pos, const at::Tensor& cell,
                                                                 const at::Tensor& pbc, const at::Tensor& ptr,
                                                                 double cutoff, int64_t max_neighbors,
                                                                 int64_t self_images) {
  const c10::cuda::CUDAGuard guard(pos.device());
  const auto plan = plan_targets(pos, cell, pbc, ptr, cutoff, max_neighbors, self_images);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "radius_graph_cuda", [&] {
    out = run<scalar_t>(plan, cutoff, max_neighbors, self_images);
  });
  return out;
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, CUDA, m) {
  m.impl("radius_graph_pbc", &e3relax::radius_graph_cuda);
}
