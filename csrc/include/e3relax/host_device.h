// E3R_HOST_DEVICE: inline on the host, __host__ __device__ under nvcc, for the per-item arithmetic
// that the CPU and CUDA kernels share.
#pragma once

#if defined(__CUDACC__)
#define E3R_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define E3R_HOST_DEVICE inline
#endif
