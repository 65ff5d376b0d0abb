// vector_message on CUDA: the device kernels and their launchers, torch-free so that `nvcc -c` checks
// them on machines without a GPU (tests/ops/test_cuda_sources.py). csrc/cuda/vector_message_cuda.cpp
// binds them to torch tensors.
//
// Forward: one block per target node i, channels across the block's threads (thread t owns channels
// t, t + blockDim, ...); each thread walks i's edges rowptr[i]..rowptr[i+1] in order and accumulates in
// registers, then writes dh[i], dvec[i] once. No atomics; bit-identical run to run.
// Backward: one block per source node j, walking its edges in perm order (the transposed CSR). grad_w[e]
// is written by the thread owning each channel; grad_phi[j], grad_vec[j] accumulate in registers
// (at most kMaxChannelsPerThread channels per thread); grad_unit[e] sums over channels with a fixed
// shuffle + shared-memory tree, so its reduction order is fixed too.
// Layout: phi [N,3F], w [E,3F], vec [N,3,F], unit [E,3], contiguous; consecutive threads read
// consecutive channels (coalesced). Half and bfloat16 inputs accumulate in float.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "e3relax/vector_message_common.h"

namespace e3relax {
namespace cuda {

constexpr int kThreads = 128;
constexpr int kMaxChannelsPerThread = 8;  // F <= 1024

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t load(const scalar_t* p) {
  return static_cast<acc_t>(*p);
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ phi, const scalar_t* __restrict__ w,
                               const scalar_t* __restrict__ vec, const scalar_t* __restrict__ unit,
                               const int64_t* __restrict__ rowptr, const int64_t* __restrict__ source, int64_t f,
                               scalar_t* __restrict__ dh, scalar_t* __restrict__ dvec) {
  const int64_t i = blockIdx.x;
  const acc_t scale_h = acc_t(1) / sqrt(acc_t(3));
  const acc_t scale_v = scale_h / sqrt(static_cast<acc_t>(f));
  for (int64_t c = threadIdx.x; c < f; c += blockDim.x) {
    acc_t sh = 0, sx = 0, sy = 0, sz = 0;
    for (int64_t e = rowptr[i]; e < rowptr[i + 1]; ++e) {
      const int64_t j = source[e];
      const scalar_t* p = phi + j * 3 * f;
      const scalar_t* we = w + e * 3 * f;
      const scalar_t* v = vec + j * 3 * f;
      const auto t = message_terms<acc_t>(load<acc_t>(p + c), load<acc_t>(p + f + c), load<acc_t>(p + 2 * f + c),
                                          load<acc_t>(we + c), load<acc_t>(we + f + c), load<acc_t>(we + 2 * f + c),
                                          load<acc_t>(v + c), load<acc_t>(v + f + c), load<acc_t>(v + 2 * f + c),
                                          load<acc_t>(unit + 3 * e), load<acc_t>(unit + 3 * e + 1),
                                          load<acc_t>(unit + 3 * e + 2));
      sh += t.h;
      sx += t.v[0];
      sy += t.v[1];
      sz += t.v[2];
    }
    dh[i * f + c] = static_cast<scalar_t>(sh * scale_h);
    dvec[i * 3 * f + c] = static_cast<scalar_t>(sx * scale_v);
    dvec[i * 3 * f + f + c] = static_cast<scalar_t>(sy * scale_v);
    dvec[i * 3 * f + 2 * f + c] = static_cast<scalar_t>(sz * scale_v);
  }
}

// Sum of v over the block, the same tree every time; the result is valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* shared) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  acc_t total = 0;
  if (threadIdx.x == 0) {
    for (int k = 0; k < kThreads / 32; ++k) total += shared[k];
  }
  __syncthreads();
  return total;
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_dh, const scalar_t* __restrict__ grad_dvec,
                                const scalar_t* __restrict__ phi, const scalar_t* __restrict__ w,
                                const scalar_t* __restrict__ vec, const scalar_t* __restrict__ unit,
                                const int64_t* __restrict__ target, const int64_t* __restrict__ perm,
                                const int64_t* __restrict__ source_ptr, int64_t f, scalar_t* __restrict__ grad_phi,
                                scalar_t* __restrict__ grad_w, scalar_t* __restrict__ grad_vec,
                                scalar_t* __restrict__ grad_unit) {
  __shared__ acc_t shared[3][kThreads / 32];
  const int64_t j = blockIdx.x;
  const acc_t s = acc_t(1) / sqrt(acc_t(3));
  const acc_t t = acc_t(1) / sqrt(static_cast<acc_t>(f));
  acc_t gp[kMaxChannelsPerThread][3] = {};
  acc_t gv[kMaxChannelsPerThread][3] = {};
  const scalar_t* p = phi + j * 3 * f;
  const scalar_t* v = vec + j * 3 * f;
  for (int64_t k = source_ptr[j]; k < source_ptr[j + 1]; ++k) {
    const int64_t e = perm[k];
    const int64_t i = target[e];
    const scalar_t* we = w + e * 3 * f;
    const scalar_t* g = grad_dvec + i * 3 * f;
    const scalar_t* gh = grad_dh + i * f;
    const acc_t ux = load<acc_t>(unit + 3 * e), uy = load<acc_t>(unit + 3 * e + 1), uz = load<acc_t>(unit + 3 * e + 2);
    acc_t gu[3] = {0, 0, 0};
    int slot = 0;
    for (int64_t c = threadIdx.x; c < f; c += blockDim.x, ++slot) {
      const auto b = message_grad_terms<acc_t>(
          load<acc_t>(p + c), load<acc_t>(p + f + c), load<acc_t>(p + 2 * f + c), load<acc_t>(we + c),
          load<acc_t>(we + f + c), load<acc_t>(we + 2 * f + c), load<acc_t>(v + c), load<acc_t>(v + f + c),
          load<acc_t>(v + 2 * f + c), ux, uy, uz, load<acc_t>(g + c), load<acc_t>(g + f + c),
          load<acc_t>(g + 2 * f + c), load<acc_t>(gh + c), s, t);
      scalar_t* gw = grad_w + e * 3 * f;
      gw[c] = static_cast<scalar_t>(b.grad_w[0]);
      gw[f + c] = static_cast<scalar_t>(b.grad_w[1]);
      gw[2 * f + c] = static_cast<scalar_t>(b.grad_w[2]);
      for (int d = 0; d < 3; ++d) {
        gp[slot][d] += b.grad_phi[d];
        gv[slot][d] += b.grad_vec[d];
        gu[d] += b.grad_unit[d];
      }
    }
    for (int d = 0; d < 3; ++d) {
      const acc_t total = block_sum<acc_t>(gu[d], shared[d]);
      if (threadIdx.x == 0) grad_unit[3 * e + d] = static_cast<scalar_t>(total);
    }
  }
  int slot = 0;
  for (int64_t c = threadIdx.x; c < f; c += blockDim.x, ++slot) {
    for (int d = 0; d < 3; ++d) {
      grad_phi[j * 3 * f + d * f + c] = static_cast<scalar_t>(gp[slot][d]);
      grad_vec[j * 3 * f + d * f + c] = static_cast<scalar_t>(gv[slot][d]);
    }
  }
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* phi, const scalar_t* w, const scalar_t* vec, const scalar_t* unit,
                           const int64_t* rowptr, const int64_t* source, int64_t n, int64_t f, scalar_t* dh,
                           scalar_t* dvec, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  forward_kernel<scalar_t, acc_t><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(phi, w, vec, unit, rowptr,
                                                                                    source, f, dh, dvec);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* grad_dh, const scalar_t* grad_dvec, const scalar_t* phi,
                            const scalar_t* w, const scalar_t* vec, const scalar_t* unit, const int64_t* target,
                            const int64_t* perm, const int64_t* source_ptr, int64_t n, int64_t f,
                            scalar_t* grad_phi, scalar_t* grad_w, scalar_t* grad_vec, scalar_t* grad_unit,
                            cudaStream_t stream) {
  if (f > int64_t(kThreads) * kMaxChannelsPerThread) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  backward_kernel<scalar_t, acc_t><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      grad_dh, grad_dvec, phi, w, vec, unit, target, perm, source_ptr, f, grad_phi, grad_w, grad_vec, grad_unit);
  return cudaGetLastError();
}

#define E3R_INSTANTIATE(scalar_t, acc_t)                                                                          \
  template cudaError_t launch_forward<scalar_t, acc_t>(const scalar_t*, const scalar_t*, const scalar_t*,        \
                                                       const scalar_t*, const int64_t*, const int64_t*, int64_t, \
                                                       int64_t, scalar_t*, scalar_t*, cudaStream_t);             \
  template cudaError_t launch_backward<scalar_t, acc_t>(                                                          \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,       \
      const int64_t*, const int64_t*, const int64_t*, int64_t, int64_t, scalar_t*, scalar_t*, scalar_t*,          \
      scalar_t*, cudaStream_t);

E3R_INSTANTIATE(float, float)
E3R_INSTANTIATE(double, double)
E3R_INSTANTIATE(__half, float)
E3R_INSTANTIATE(__nv_bfloat16, float)
#undef E3R_INSTANTIATE

}  // namespace cuda
}  // namespace e3relax
