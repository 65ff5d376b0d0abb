// radius_graph_pbc on CUDA: one thread per target atom runs the per-target functions of
// e3relax/radius_graph_target.h (count, fill + sort, finalize) over cell lists, the same code the CPU
// harness of the test-only library (csrc/testing/radius_graph_targets_cpu.cpp) runs in the test suite. Torch-free so that `nvcc -c` checks it without a
// GPU; csrc/cuda/radius_graph_cuda.cpp builds the cell lists and does the bookkeeping (prefix sums,
// allocation) with ATen on the device. Layout: pos [N,3], cell [B,3,3] (rows) in the input dtype; the
// cell-list arrays of TargetGraphArgs (images sorted by bin, [I,3] doubles). A target reads at most 3 x 3
// runs of consecutive images, linear in atoms, and writes only its own segments: no atomics, and the
// output is that of the CPU kernels.
#include <cuda_runtime.h>

#include <cstdint>

#include "e3relax/radius_graph_target.h"

using e3relax::TargetGraphArgs;

namespace e3relax {
namespace cuda {

constexpr int kTargetThreads = 128;

template <typename scalar_t>
__global__ void count_kernel(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g, scalar_t cutoff_sq,
                             int64_t* counts) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= g.num_atoms) return;
  counts[i] = scan_target<false>(g, pos, cell, i, cutoff_sq, static_cast<Candidate<scalar_t>*>(nullptr));
}

template <typename scalar_t>
__global__ void fill_kernel(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g, scalar_t cutoff_sq,
                            const int64_t* candidate_counts, const int64_t* candidate_offsets,
                            Candidate<scalar_t>* candidates, int64_t* edge_counts) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= g.num_atoms) return;
  const int64_t b = g.structure[i], start = g.ptr[b];
  Candidate<scalar_t>* segment = candidates + candidate_offsets[i];
  scan_target<true>(g, pos, cell, i, cutoff_sq, segment);
  insertion_sort_candidates(segment, candidate_counts[i]);
  edge_counts[i] = finalize_target(segment, candidate_counts[i], g.max_neighbors, g.self_images, pos + 3 * start,
                                   i - start, cell + 9 * b, g.pbc + 3 * b, start, static_cast<int64_t*>(nullptr),
                                   static_cast<int64_t*>(nullptr), static_cast<int64_t*>(nullptr));
}

template <typename scalar_t>
__global__ void write_kernel(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g,
                             const int64_t* candidate_counts, const int64_t* candidate_offsets,
                             const Candidate<scalar_t>* candidates, const int64_t* edge_offsets, int64_t num_edges,
                             int64_t* edge_index, int64_t* shifts) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= g.num_atoms) return;
  const int64_t b = g.structure[i], start = g.ptr[b];
  const int64_t o = edge_offsets[i];
  finalize_target(candidates + candidate_offsets[i], candidate_counts[i], g.max_neighbors, g.self_images,
                  pos + 3 * start, i - start, cell + 9 * b, g.pbc + 3 * b, start, edge_index + o,
                  edge_index + num_edges + o, shifts + 3 * o);
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kTargetThreads - 1) / kTargetThreads); }

template <typename scalar_t>
cudaError_t launch_count(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g, scalar_t cutoff_sq,
                         int64_t* counts, cudaStream_t stream) {
  if (g.num_atoms == 0) return cudaSuccess;
  count_kernel<scalar_t><<<blocks_for(g.num_atoms), kTargetThreads, 0, stream>>>(pos, cell, g, cutoff_sq, counts);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_fill(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g, scalar_t cutoff_sq,
                        const int64_t* candidate_counts, const int64_t* candidate_offsets, void* candidates,
                        int64_t* edge_counts, cudaStream_t stream) {
  if (g.num_atoms == 0) return cudaSuccess;
  fill_kernel<scalar_t><<<blocks_for(g.num_atoms), kTargetThreads, 0, stream>>>(
      pos, cell, g, cutoff_sq, candidate_counts, candidate_offsets, static_cast<Candidate<scalar_t>*>(candidates),
      edge_counts);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_write(const scalar_t* pos, const scalar_t* cell, TargetGraphArgs g, const int64_t* candidate_counts,
                         const int64_t* candidate_offsets, const void* candidates, const int64_t* edge_offsets,
                         int64_t num_edges, int64_t* edge_index, int64_t* shifts, cudaStream_t stream) {
  if (g.num_atoms == 0) return cudaSuccess;
  write_kernel<scalar_t><<<blocks_for(g.num_atoms), kTargetThreads, 0, stream>>>(
      pos, cell, g, candidate_counts, candidate_offsets, static_cast<const Candidate<scalar_t>*>(candidates),
      edge_offsets, num_edges, edge_index, shifts);
  return cudaGetLastError();
}

template <typename scalar_t>
size_t candidate_bytes() {
  return sizeof(Candidate<scalar_t>);
}

#define E3R_INSTANTIATE(T)                                                                                        \
  template cudaError_t launch_count<T>(const T*, const T*, TargetGraphArgs, T, int64_t*, cudaStream_t);                 \
  template cudaError_t launch_fill<T>(const T*, const T*, TargetGraphArgs, T, const int64_t*, const int64_t*, void*,    \
                                      int64_t*, cudaStream_t);                                                    \
  template cudaError_t launch_write<T>(const T*, const T*, TargetGraphArgs, const int64_t*, const int64_t*, const void*, \
                                       const int64_t*, int64_t, int64_t*, int64_t*, cudaStream_t);                \
  template size_t candidate_bytes<T>();
E3R_INSTANTIATE(float)
E3R_INSTANTIATE(double)
#undef E3R_INSTANTIATE

}  // namespace cuda
}  // namespace e3relax
