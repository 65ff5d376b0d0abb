// radial_filter on the CPU: out[e] = bias + W phi(d_e), the edge filter of E3Relax applied to its
// Gaussian basis without materialising the [E, M] basis, over the band of basis functions that matter
// (arithmetic and the band argument in e3relax/radial_filter_common.h).
//
// Algorithm: forward is parallel over edges; each edge adds 19 (float64) or 13 (float32) scaled rows of
// W^T to its output row, 64 channels at a time in registers.
// Backward is parallel over fixed chunks of kEdgesPerChunk edges: grad_distance[e] is written once per
// edge, while grad_weight and grad_bias are summed per chunk into their own partial buffers and then
// added up chunk by chunk in chunk order, so the result does not depend on the thread count.
//
// Memory layout: distance [E], W^T [M, O] (transposed once per call), out / grad_out [E, O], all
// contiguous; the inner loops run over the output channel with unit stride and vectorise.
// Vector width: the per-range workers are cloned for AVX2 and for any x86-64 (target_clones, chosen at
// load time); the clones round alike per channel except the per-edge dot product of the backward pass.
// Reduction order: basis index m ascending within an edge; edges ascending within a chunk; chunks
// ascending. Fixed for any thread count: results are bit-identical run to run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>

#include "e3relax/radial_filter_common.h"

namespace e3relax {
namespace {

constexpr int64_t kEdgesPerTask = 256;
constexpr int64_t kEdgesPerChunk = 8192;

void check_args(const at::Tensor& distance, const at::Tensor& weight, const at::Tensor& bias, double cutoff,
                int64_t envelope_exponent) {
  TORCH_CHECK_VALUE(distance.dim() == 1, "radial_filter: field 'distance' must be [E], got ", distance.sizes());
  TORCH_CHECK_VALUE(distance.scalar_type() == at::kFloat || distance.scalar_type() == at::kDouble,
                    "radial_filter: field 'distance' must be float32 or float64, got ", distance.scalar_type());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) >= 2 && weight.scalar_type() == distance.scalar_type(),
                    "radial_filter: field 'weight' must be [O, M] with M >= 2 and the dtype of distance, got ",
                    weight.sizes(), " ", weight.scalar_type());
  TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.scalar_type() == distance.scalar_type(),
                    "radial_filter: field 'bias' must be [O] with O = ", weight.size(0), " and the dtype of distance");
  TORCH_CHECK_VALUE(distance.device() == weight.device() && distance.device() == bias.device(),
                    "radial_filter: distance, weight and bias must be on one device");
  TORCH_CHECK_VALUE(cutoff > 0.0 && std::isfinite(cutoff), "radial_filter: cutoff must be positive, got ", cutoff);
  TORCH_CHECK_VALUE(envelope_exponent >= 1, "radial_filter: envelope_exponent must be >= 1, got ", envelope_exponent);
}

// Output channels per register block of the forward pass: the block's accumulators stay in vector
// registers across the whole band, so each multiply-add costs one load of W instead of a load, a load
// and a store of the output row (which held the previous kernel to a fraction of the machine's rate).
constexpr int64_t kChannelBlock = 64;

template <typename scalar_t>
[[gnu::always_inline]] inline void forward_edges(int64_t begin, int64_t end, const scalar_t* distance,
                                                 const scalar_t* weight_t, const scalar_t* bias, int64_t num_basis,
                                                 int64_t channels, scalar_t inv_cutoff, int64_t exponent,
                                                 scalar_t* out) {
    scalar_t gauss[2 * kBandHalfWidth + 1];
    for (int64_t e = begin; e < end; ++e) {
      scalar_t* row = out + e * channels;
      int64_t first = 0;
      const int64_t width = band_gaussians(distance[e] * inv_cutoff, num_basis, exponent, gauss, &first);
      const scalar_t* w_band = weight_t + first * channels;
      // Per channel: bias, then + g_m w_m for m ascending: the same operations in the same order for a
      // full block and for the tail.
      int64_t c0 = 0;
      for (; c0 + kChannelBlock <= channels; c0 += kChannelBlock) {
        scalar_t acc[kChannelBlock];
#pragma omp simd
        for (int64_t c = 0; c < kChannelBlock; ++c) acc[c] = bias[c0 + c];
        for (int64_t k = 0; k < width; ++k) {
          const scalar_t g = gauss[k];
          const scalar_t* w = w_band + k * channels + c0;
#pragma omp simd
          for (int64_t c = 0; c < kChannelBlock; ++c) acc[c] += g * w[c];
        }
#pragma omp simd
        for (int64_t c = 0; c < kChannelBlock; ++c) row[c0 + c] = acc[c];
      }
      for (int64_t c = c0; c < channels; ++c) {
        scalar_t acc = bias[c];
        for (int64_t k = 0; k < width; ++k) acc += gauss[k] * w_band[k * channels + c];
        row[c] = acc;
      }
    }
}

// The channel loops vectorise 4x wider with AVX2: clones for it and for any x86-64 CPU, picked at load
// time (no FMA, so both clones round alike per channel).
#define E3R_CPU_CLONES __attribute__((target_clones("avx2", "default")))

E3R_CPU_CLONES void forward_edges_float(int64_t begin, int64_t end, const float* distance, const float* weight_t,
                                        const float* bias, int64_t num_basis, int64_t channels, float inv_cutoff,
                                        int64_t exponent, float* out) {
  forward_edges<float>(begin, end, distance, weight_t, bias, num_basis, channels, inv_cutoff, exponent, out);
}

E3R_CPU_CLONES void forward_edges_double(int64_t begin, int64_t end, const double* distance, const double* weight_t,
                                         const double* bias, int64_t num_basis, int64_t channels, double inv_cutoff,
                                         int64_t exponent, double* out) {
  forward_edges<double>(begin, end, distance, weight_t, bias, num_basis, channels, inv_cutoff, exponent, out);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* distance, const scalar_t* weight_t, const scalar_t* bias, int64_t num_edges,
                    int64_t num_basis, int64_t channels, scalar_t inv_cutoff, int64_t exponent, scalar_t* out) {
  at::parallel_for(0, num_edges, kEdgesPerTask, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      forward_edges_float(begin, end, distance, weight_t, bias, num_basis, channels, inv_cutoff, exponent, out);
    } else {
      forward_edges_double(begin, end, distance, weight_t, bias, num_basis, channels, inv_cutoff, exponent, out);
    }
  });
}

template <typename scalar_t>
[[gnu::always_inline]] inline void backward_chunks(int64_t chunk_begin, int64_t chunk_end, const scalar_t* grad_out,
                                                   const scalar_t* distance, const scalar_t* weight_t,
                                                   int64_t num_edges, int64_t num_basis, int64_t channels,
                                                   scalar_t inv_cutoff, int64_t exponent, scalar_t* grad_distance,
                                                   scalar_t* partial) {
    const int64_t stride = num_basis * channels + channels;
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      scalar_t* grad_weight_t = partial + chunk * stride;
      scalar_t* grad_bias = grad_weight_t + num_basis * channels;
      for (int64_t k = 0; k < stride; ++k) grad_weight_t[k] = 0;
      const int64_t last_edge = std::min(num_edges, (chunk + 1) * kEdgesPerChunk);
      for (int64_t e = chunk * kEdgesPerChunk; e < last_edge; ++e) {
        const scalar_t* go = grad_out + e * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) grad_bias[c] += go[c];
        const scalar_t t = distance[e] * inv_cutoff;
        const Band band = basis_band(t, num_basis);
        scalar_t grad_t = 0;
        if (band.last >= band.first) {
          const auto envelope = polynomial_envelope(t, exponent);
          const scalar_t scale = static_cast<scalar_t>(num_basis - 1);
          const scalar_t x = t * scale;
          for (int64_t m = band.first; m <= band.last; ++m) {
            const scalar_t dx = x - static_cast<scalar_t>(m);
            const scalar_t gauss = std::exp(scalar_t(-0.5) * dx * dx);
            const scalar_t g = envelope.value * gauss;
            const scalar_t* w = weight_t + m * channels;
            scalar_t* gw = grad_weight_t + m * channels;
            scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < channels; ++c) {
              dot += go[c] * w[c];
              gw[c] += g * go[c];
            }
            // d phi_m / dt = env' gauss + env gauss (-(x - m)) (M - 1)
            grad_t += dot * gauss * (envelope.slope - envelope.value * dx * scale);
          }
        }
        grad_distance[e] = grad_t * inv_cutoff;
      }
    }
}

E3R_CPU_CLONES void backward_chunks_float(int64_t b, int64_t e, const float* go, const float* d, const float* w,
                                          int64_t n, int64_t m, int64_t c, float inv, int64_t p, float* gd,
                                          float* partial) {
  backward_chunks<float>(b, e, go, d, w, n, m, c, inv, p, gd, partial);
}

E3R_CPU_CLONES void backward_chunks_double(int64_t b, int64_t e, const double* go, const double* d, const double* w,
                                           int64_t n, int64_t m, int64_t c, double inv, int64_t p, double* gd,
                                           double* partial) {
  backward_chunks<double>(b, e, go, d, w, n, m, c, inv, p, gd, partial);
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* distance, const scalar_t* weight_t, int64_t num_edges,
                     int64_t num_basis, int64_t channels, scalar_t inv_cutoff, int64_t exponent,
                     scalar_t* grad_distance, scalar_t* partial /* [chunks, M*O + O] */) {
  const int64_t num_chunks = (num_edges + kEdgesPerChunk - 1) / kEdgesPerChunk;
  at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      backward_chunks_float(chunk_begin, chunk_end, grad_out, distance, weight_t, num_edges, num_basis, channels,
                            inv_cutoff, exponent, grad_distance, partial);
    } else {
      backward_chunks_double(chunk_begin, chunk_end, grad_out, distance, weight_t, num_edges, num_basis, channels,
                             inv_cutoff, exponent, grad_distance, partial);
    }
  });
}

at::Tensor radial_filter_forward_cpu(const at::Tensor& distance_in, const at::Tensor& weight_in,
                                     const at::Tensor& bias_in, double cutoff, int64_t envelope_exponent) {
  check_args(distance_in, weight_in, bias_in, cutoff, envelope_exponent);
  const auto distance = distance_in.contiguous();
  const auto weight_t = weight_in.t().contiguous();  // [M, O]
  const auto bias = bias_in.contiguous();
  const int64_t num_edges = distance.size(0), num_basis = weight_in.size(1), channels = weight_in.size(0);
  auto out = at::empty({num_edges, channels}, distance.options());
  AT_DISPATCH_FLOATING_TYPES(distance.scalar_type(), "radial_filter_forward_cpu", [&] {
    forward_kernel<scalar_t>(distance.data_ptr<scalar_t>(), weight_t.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                             num_edges, num_basis, channels, static_cast<scalar_t>(1.0 / cutoff), envelope_exponent,
                             out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> radial_filter_backward_cpu(const at::Tensor& grad_out_in,
                                                                          const at::Tensor& distance_in,
                                                                          const at::Tensor& weight_in, double cutoff,
                                                                          int64_t envelope_exponent) {
  const int64_t channels = weight_in.size(0), num_basis = weight_in.size(1);
  check_args(distance_in, weight_in, at::empty({channels}, weight_in.options()), cutoff, envelope_exponent);
  TORCH_CHECK_VALUE(grad_out_in.dim() == 2 && grad_out_in.size(0) == distance_in.size(0) &&
                        grad_out_in.size(1) == channels,
                    "radial_filter_backward: grad_out must be [E, O]");
  const auto grad_out = grad_out_in.contiguous().to(distance_in.scalar_type());
  const auto distance = distance_in.contiguous();
  const auto weight_t = weight_in.t().contiguous();
  const int64_t num_edges = distance.size(0);
  const int64_t num_chunks = (num_edges + kEdgesPerChunk - 1) / kEdgesPerChunk;
  const int64_t stride = num_basis * channels + channels;
  auto grad_distance = at::empty_like(distance);
  auto partial = at::empty({std::max<int64_t>(num_chunks, 1), stride}, distance.options());
  if (num_chunks == 0) partial.zero_();
  AT_DISPATCH_FLOATING_TYPES(distance.scalar_type(), "radial_filter_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), distance.data_ptr<scalar_t>(),
                              weight_t.data_ptr<scalar_t>(), num_edges, num_basis, channels,
                              static_cast<scalar_t>(1.0 / cutoff), envelope_exponent,
                              grad_distance.data_ptr<scalar_t>(), partial.data_ptr<scalar_t>());
  });
  // chunk partials added in chunk order, each column on its own: independent of the thread count
  auto total = at::empty({stride}, distance.options());
  AT_DISPATCH_FLOATING_TYPES(distance.scalar_type(), "radial_filter_reduce_cpu", [&] {
    const scalar_t* p = partial.data_ptr<scalar_t>();
    scalar_t* out = total.data_ptr<scalar_t>();
    const int64_t rows = partial.size(0);
    at::parallel_for(0, stride, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        scalar_t sum = 0;
        for (int64_t r = 0; r < rows; ++r) sum += p[r * stride + k];
        out[k] = sum;
      }
    });
  });
  auto grad_weight = total.slice(0, 0, num_basis * channels).view({num_basis, channels}).t().contiguous();
  auto grad_bias = total.slice(0, num_basis * channels).contiguous();
  return {grad_distance, grad_weight, grad_bias};
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, CPU, m) {
  m.impl("radial_filter_forward", &e3relax::radial_filter_forward_cpu);
  m.impl("radial_filter_backward", &e3relax::radial_filter_backward_cpu);
}
