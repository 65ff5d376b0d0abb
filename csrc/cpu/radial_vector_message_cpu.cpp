// radial_vector_message on the CPU: vector_message with its edge filter w = bias + W phi(d) computed
// inside, per edge and channel block, and never stored. Inference only (no autograd).
//
// Why: at E3Relax's sizes the filter output w [E, 3F] is the largest tensor of a layer (1.2 GB for
// 190k edges at F = 512); writing it and reading it back cost more than the arithmetic that makes it.
//
// Algorithm: node-parallel over targets i, as vector_message's forward. For each edge e = (j -> i) of
// i (CSR order): the band of Gaussians of d_e (19 in float64, 13 in float32; e3relax/
// radial_filter_common.h), then per block of kBlock channels: the three filter blocks wa, wb, wc
// accumulated in registers (bias, then + g_m W^T[m] for m ascending), then the message terms of
// e3relax/vector_message_common.h added to i's output rows: the operations of radial_filter followed by
// vector_message, in the same order. Without FMA (the AVX2 and baseline clones) the result equals that
// pair bit for bit; the AVX-512 clone fuses multiply-adds, which moves results by rounding only.
//
// Memory layout: phi [N,3F], W^T [M,3F] (transposed once per call, read from L2), bias [3F],
// vec [N,3,F], unit [E,3], distance [E], all contiguous. Reduction order: edges in CSR order,
// channels independent: bit-identical run to run and for any thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "e3relax/index_checks.h"
#include "e3relax/radial_filter_common.h"
#include "e3relax/vector_message_common.h"

namespace e3relax {
namespace {

constexpr int64_t kNodesPerTask = 16;

// kBlock: channels per register block; 3 x kBlock accumulators must fit the vector registers (64 floats:
// 12 of AVX-512's 32 registers; 16 floats: 6 of AVX2's 16).
template <typename scalar_t, int64_t kBlock>
[[gnu::always_inline]] inline void message_nodes(int64_t begin, int64_t end, const scalar_t* phi,
                                                 const scalar_t* distance, const scalar_t* weight_t,
                                                 const scalar_t* bias, int64_t num_basis, scalar_t inv_cutoff,
                                                 int64_t exponent, const scalar_t* vec, const scalar_t* unit,
                                                 const int64_t* rowptr, const int64_t* source, int64_t f,
                                                 scalar_t* dh, scalar_t* dvec) {
  const scalar_t scale_h = scalar_t(1) / std::sqrt(scalar_t(3));
  const scalar_t scale_v = scale_h / std::sqrt(static_cast<scalar_t>(f));
  const int64_t width3 = 3 * f;
  scalar_t gauss[2 * kBandHalfWidth + 1];
  for (int64_t i = begin; i < end; ++i) {
    message_target_rows(i, f, rowptr, source, phi, vec, unit, scale_h, scale_v, dh, dvec,
                        [&](int64_t e, const scalar_t* p, const scalar_t* v, scalar_t ux, scalar_t uy, scalar_t uz,
                            scalar_t* out_h, scalar_t* out_v) __attribute__((always_inline)) {
      int64_t first = 0;
      const int64_t width = band_gaussians(distance[e] * inv_cutoff, num_basis, exponent, gauss, &first);
      const scalar_t* w_band = weight_t + first * width3;
      int64_t c0 = 0;
      for (; c0 + kBlock <= f; c0 += kBlock) {
        scalar_t wa[kBlock], wb[kBlock], wc[kBlock];
#pragma omp simd
        for (int64_t c = 0; c < kBlock; ++c) {
          wa[c] = bias[c0 + c];
          wb[c] = bias[f + c0 + c];
          wc[c] = bias[2 * f + c0 + c];
        }
        for (int64_t k = 0; k < width; ++k) {
          const scalar_t g = gauss[k];
          const scalar_t* w = w_band + k * width3 + c0;
#pragma omp simd
          for (int64_t c = 0; c < kBlock; ++c) {
            wa[c] += g * w[c];
            wb[c] += g * w[f + c];
            wc[c] += g * w[2 * f + c];
          }
        }
#pragma omp simd
        for (int64_t c = 0; c < kBlock; ++c) add_message(out_h, out_v, f, c0 + c, p, v, wa[c], wb[c], wc[c], ux, uy, uz);
      }
      for (int64_t q = c0; q < f; ++q) {  // channels past the last full block
        scalar_t wa = bias[q], wb = bias[f + q], wc = bias[2 * f + q];
        for (int64_t k = 0; k < width; ++k) {
          wa += gauss[k] * w_band[k * width3 + q];
          wb += gauss[k] * w_band[k * width3 + f + q];
          wc += gauss[k] * w_band[k * width3 + 2 * f + q];
        }
        add_message(out_h, out_v, f, q, p, v, wa, wb, wc, ux, uy, uz);
      }
    });
  }
}

// One build per instruction set, chosen at run time: AVX-512 (with FMA: 1.9x faster than AVX2 at
// F = 512), AVX2 and any x86-64 CPU. The AVX2 and baseline builds do not fuse multiply-adds and round
// exactly as radial_filter and vector_message do.
template <typename scalar_t>
using MessageNodesFn = void (*)(int64_t, int64_t, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,
                                int64_t, scalar_t, int64_t, const scalar_t*, const scalar_t*, const int64_t*,
                                const int64_t*, int64_t, scalar_t*, scalar_t*);

#define E3R_MESSAGE_NODES(NAME, TARGET, BLOCK)                                                                      \
  template <typename scalar_t>                                                                                    \
  TARGET void NAME(int64_t begin, int64_t end, const scalar_t* phi, const scalar_t* distance,                     \
                   const scalar_t* weight_t, const scalar_t* bias, int64_t num_basis, scalar_t inv_cutoff,         \
                   int64_t exponent, const scalar_t* vec, const scalar_t* unit, const int64_t* rowptr,            \
                   const int64_t* source, int64_t f, scalar_t* dh, scalar_t* dvec) {                              \
    message_nodes<scalar_t, BLOCK>(begin, end, phi, distance, weight_t, bias, num_basis, inv_cutoff, exponent, vec, \
                                   unit, rowptr, source, f, dh, dvec);                                            \
  }

#if defined(__x86_64__) && defined(__GNUC__)
E3R_MESSAGE_NODES(message_nodes_avx512, __attribute__((target("avx512f"))), 64)
E3R_MESSAGE_NODES(message_nodes_avx2, __attribute__((target("avx2"))), 16)
#endif
E3R_MESSAGE_NODES(message_nodes_baseline, , 16)
#undef E3R_MESSAGE_NODES

// E3RELAX_CPU_ISA=avx2|baseline caps the choice (the tests run every build this way).
template <typename scalar_t>
MessageNodesFn<scalar_t> choose_message_nodes() {
  const char* cap = std::getenv("E3RELAX_CPU_ISA");
  const std::string limit = cap ? cap : "";
#if defined(__x86_64__) && defined(__GNUC__)
  if (limit.empty() && __builtin_cpu_supports("avx512f")) return &message_nodes_avx512<scalar_t>;
  if ((limit.empty() || limit == "avx2") && __builtin_cpu_supports("avx2")) return &message_nodes_avx2<scalar_t>;
#endif
  return &message_nodes_baseline<scalar_t>;
}

std::tuple<at::Tensor, at::Tensor> radial_vector_message_cpu(const at::Tensor& phi, const at::Tensor& distance,
                                                             const at::Tensor& weight, const at::Tensor& bias,
                                                             double cutoff, int64_t envelope_exponent,
                                                             const at::Tensor& vec, const at::Tensor& unit,
                                                             const at::Tensor& rowptr, const at::Tensor& source) {
  const auto dtype = phi.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble,
                    "radial_vector_message: field 'phi' must be float32 or float64, got ", dtype);
  TORCH_CHECK_VALUE(vec.dim() == 3 && vec.size(1) == 3, "radial_vector_message: field 'vec' must be [N, 3, F], got ",
                    vec.sizes());
  const int64_t n = vec.size(0), f = vec.size(2), num_edges = distance.numel();
  TORCH_CHECK_VALUE(phi.dim() == 2 && phi.size(0) == n && phi.size(1) == 3 * f,
                    "radial_vector_message: field 'phi' must be [N, 3F] = [", n, ", ", 3 * f, "], got ", phi.sizes());
  TORCH_CHECK_VALUE(distance.dim() == 1, "radial_vector_message: field 'distance' must be [E], got ",
                    distance.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == 3 * f && weight.size(1) >= 2,
                    "radial_vector_message: field 'weight' must be [3F, M] with M >= 2, got ", weight.sizes());
  TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == 3 * f, "radial_vector_message: field 'bias' must be [3F]");
  TORCH_CHECK_VALUE(unit.dim() == 2 && unit.size(0) == num_edges && unit.size(1) == 3,
                    "radial_vector_message: field 'unit' must be [E, 3] with E = ", num_edges);
  TORCH_CHECK_VALUE(rowptr.dim() == 1 && rowptr.numel() == n + 1 && rowptr.scalar_type() == at::kLong,
                    "radial_vector_message: field 'rowptr' must be int64 [N + 1]");
  TORCH_CHECK_VALUE(source.dim() == 1 && source.numel() == num_edges && source.scalar_type() == at::kLong,
                    "radial_vector_message: field 'source' must be int64 [E]");
  for (const at::Tensor* t : {&distance, &weight, &bias, &vec, &unit}) {
    TORCH_CHECK_VALUE(t->scalar_type() == dtype, "radial_vector_message: all float inputs must share phi's dtype ",
                      dtype, ", got ", t->scalar_type());
  }
  TORCH_CHECK_VALUE(cutoff > 0.0 && std::isfinite(cutoff), "radial_vector_message: cutoff must be positive, got ",
                    cutoff);
  TORCH_CHECK_VALUE(envelope_exponent >= 1, "radial_vector_message: envelope_exponent must be >= 1");
  check_index_range(source, n, "radial_vector_message", "source");
  check_row_pointer(rowptr, num_edges, "radial_vector_message", "rowptr");
  const auto phi_c = phi.contiguous(), distance_c = distance.contiguous(), weight_t = weight.t().contiguous();
  const auto bias_c = bias.contiguous(), vec_c = vec.contiguous(), unit_c = unit.contiguous();
  const auto rowptr_c = rowptr.contiguous(), source_c = source.contiguous();
  auto dh = at::empty({n, f}, phi.options());
  auto dvec = at::empty({n, 3, f}, phi.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "radial_vector_message_cpu", [&] {
    const scalar_t inv_cutoff = static_cast<scalar_t>(1.0 / cutoff);
    static const MessageNodesFn<scalar_t> message_nodes_fn = choose_message_nodes<scalar_t>();
    at::parallel_for(0, n, kNodesPerTask, [&](int64_t begin, int64_t end) {
      message_nodes_fn(begin, end, phi_c.data_ptr<scalar_t>(), distance_c.data_ptr<scalar_t>(),
                       weight_t.data_ptr<scalar_t>(), bias_c.data_ptr<scalar_t>(), weight.size(1), inv_cutoff,
                       envelope_exponent, vec_c.data_ptr<scalar_t>(), unit_c.data_ptr<scalar_t>(),
                       rowptr_c.data_ptr<int64_t>(), source_c.data_ptr<int64_t>(), f, dh.data_ptr<scalar_t>(),
                       dvec.data_ptr<scalar_t>());
    });
  });
  return {dh, dvec};
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, CPU, m) { m.impl("radial_vector_message", &e3relax::radial_vector_message_cpu); }
