// vector_message on the CPU: forward and backward of the fused scalar-vector message aggregation
// (arithmetic in e3relax/vector_message_common.h).
//
// Algorithm: forward is node-parallel over targets i (OpenMP through at::parallel_for): the edges of i
// are rows rowptr[i]..rowptr[i+1] of the target-sorted edge list, and the sums go straight into i's own
// output rows, which no other thread touches. Backward is node-parallel over sources j through the
// transposed CSR (perm: edge ids sorted by source, source_ptr: its row pointer): each edge belongs to one
// source, so grad_w[e] and grad_unit[e] are written once, and grad_phi[j], grad_vec[j] accumulate in j's
// rows; messages are recomputed, nothing per edge is stored between the passes.
//
// Memory layout: phi [N,3F], w [E,3F], vec [N,3,F], unit [E,3], all contiguous; the inner loops run over
// the channel index f with unit stride, so they vectorise.
// Reduction order: edges in CSR order (target pass) or perm order (source pass), channels independent;
// fixed for any thread count, so results are bit-identical run to run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "e3relax/vector_message_checks.h"
#include "e3relax/vector_message_common.h"

namespace e3relax {
namespace {

constexpr int64_t kNodesPerTask = 16;

template <typename scalar_t>
void forward_kernel(const scalar_t* phi, const scalar_t* w, const scalar_t* vec, const scalar_t* unit,
                    const int64_t* rowptr, const int64_t* source, int64_t n, int64_t f, scalar_t* dh,
                    scalar_t* dvec) {
  const scalar_t scale_h = scalar_t(1) / std::sqrt(scalar_t(3));
  const scalar_t scale_v = scale_h / std::sqrt(static_cast<scalar_t>(f));
  at::parallel_for(0, n, kNodesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      message_target_rows(i, f, rowptr, source, phi, vec, unit, scale_h, scale_v, dh, dvec,
                          [&](int64_t e, const scalar_t* p, const scalar_t* v, scalar_t ux, scalar_t uy, scalar_t uz,
                              scalar_t* out_h, scalar_t* out_v) __attribute__((always_inline)) {
                            const scalar_t* we = w + e * 3 * f;
#pragma omp simd
                            for (int64_t c = 0; c < f; ++c) {
                              add_message(out_h, out_v, f, c, p, v, we[c], we[f + c], we[2 * f + c], ux, uy, uz);
                            }
                          });
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_dh, const scalar_t* grad_dvec, const scalar_t* phi, const scalar_t* w,
                     const scalar_t* vec, const scalar_t* unit, const int64_t* target, const int64_t* perm,
                     const int64_t* source_ptr, int64_t n, int64_t f, scalar_t* grad_phi, scalar_t* grad_w,
                     scalar_t* grad_vec, scalar_t* grad_unit) {
  const scalar_t s = scalar_t(1) / std::sqrt(scalar_t(3));
  const scalar_t t = scalar_t(1) / std::sqrt(static_cast<scalar_t>(f));
  at::parallel_for(0, n, kNodesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      scalar_t* gp = grad_phi + j * 3 * f;
      scalar_t* gv = grad_vec + j * 3 * f;
      for (int64_t c = 0; c < 3 * f; ++c) gp[c] = 0, gv[c] = 0;
      const scalar_t* p = phi + j * 3 * f;
      const scalar_t* v = vec + j * 3 * f;
      for (int64_t k = source_ptr[j]; k < source_ptr[j + 1]; ++k) {
        const int64_t e = perm[k];
        const int64_t i = target[e];
        const scalar_t* we = w + e * 3 * f;
        const scalar_t* g = grad_dvec + i * 3 * f;
        const scalar_t* gh = grad_dh + i * f;
        scalar_t* gw = grad_w + e * 3 * f;
        const scalar_t ux = unit[3 * e], uy = unit[3 * e + 1], uz = unit[3 * e + 2];
        scalar_t gux = 0, guy = 0, guz = 0;
#pragma omp simd reduction(+ : gux, guy, guz)
        for (int64_t c = 0; c < f; ++c) {
          const auto b = message_grad_terms<scalar_t>(p[c], p[f + c], p[2 * f + c], we[c], we[f + c], we[2 * f + c],
                                                      v[c], v[f + c], v[2 * f + c], ux, uy, uz, g[c], g[f + c],
                                                      g[2 * f + c], gh[c], s, t);
          gw[c] = b.grad_w[0];
          gw[f + c] = b.grad_w[1];
          gw[2 * f + c] = b.grad_w[2];
          gp[c] += b.grad_phi[0];
          gp[f + c] += b.grad_phi[1];
          gp[2 * f + c] += b.grad_phi[2];
          gv[c] += b.grad_vec[0];
          gv[f + c] += b.grad_vec[1];
          gv[2 * f + c] += b.grad_vec[2];
          gux += b.grad_unit[0];
          guy += b.grad_unit[1];
          guz += b.grad_unit[2];
        }
        grad_unit[3 * e] = gux;
        grad_unit[3 * e + 1] = guy;
        grad_unit[3 * e + 2] = guz;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> vector_message_forward_cpu(
    const at::Tensor& phi, const at::Tensor& w, const at::Tensor& vec, const at::Tensor& unit,
    const at::Tensor& rowptr, const at::Tensor& source, const at::Tensor& target, const at::Tensor& perm,
    const at::Tensor& source_ptr) {
  check_vector_message_inputs(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  const int64_t n = vec.size(0), f = vec.size(2);
  auto phi_c = phi.contiguous(), w_c = w.contiguous(), vec_c = vec.contiguous(), unit_c = unit.contiguous();
  auto rowptr_c = rowptr.contiguous(), source_c = source.contiguous();
  auto dh = at::empty({n, f}, phi.options());
  auto dvec = at::empty({n, 3, f}, phi.options());
  AT_DISPATCH_FLOATING_TYPES(phi.scalar_type(), "vector_message_forward_cpu", [&] {
    forward_kernel<scalar_t>(phi_c.data_ptr<scalar_t>(), w_c.data_ptr<scalar_t>(), vec_c.data_ptr<scalar_t>(),
                             unit_c.data_ptr<scalar_t>(), rowptr_c.data_ptr<int64_t>(),
                             source_c.data_ptr<int64_t>(), n, f, dh.data_ptr<scalar_t>(), dvec.data_ptr<scalar_t>());
  });
  return {dh, dvec};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> vector_message_backward_cpu(
    const at::Tensor& grad_dh, const at::Tensor& grad_dvec, const at::Tensor& phi, const at::Tensor& w,
    const at::Tensor& vec, const at::Tensor& unit, const at::Tensor& rowptr, const at::Tensor& source,
    const at::Tensor& target, const at::Tensor& perm, const at::Tensor& source_ptr) {
  check_vector_message_inputs(phi, w, vec, unit, rowptr, source, target, perm, source_ptr);
  const int64_t n = vec.size(0), f = vec.size(2);
  auto phi_c = phi.contiguous(), w_c = w.contiguous(), vec_c = vec.contiguous(), unit_c = unit.contiguous();
  auto gdh = grad_dh.to(phi.scalar_type()).contiguous(), gdvec = grad_dvec.to(phi.scalar_type()).contiguous();
  auto target_c = target.contiguous(), perm_c = perm.contiguous(), source_ptr_c = source_ptr.contiguous();
  // Edges with no source row (none, for a valid graph) would leave grad_w unset: start from zeros.
  auto grad_phi = at::empty_like(phi_c), grad_vec = at::empty_like(vec_c);
  auto grad_w = at::zeros_like(w_c), grad_unit = at::zeros_like(unit_c);
  AT_DISPATCH_FLOATING_TYPES(phi.scalar_type(), "vector_message_backward_cpu", [&] {
    backward_kernel<scalar_t>(gdh.data_ptr<scalar_t>(), gdvec.data_ptr<scalar_t>(), phi_c.data_ptr<scalar_t>(),
                              w_c.data_ptr<scalar_t>(), vec_c.data_ptr<scalar_t>(), unit_c.data_ptr<scalar_t>(),
                              target_c.data_ptr<int64_t>(), perm_c.data_ptr<int64_t>(),
                              source_ptr_c.data_ptr<int64_t>(), n, f, grad_phi.data_ptr<scalar_t>(),
                              grad_w.data_ptr<scalar_t>(), grad_vec.data_ptr<scalar_t>(),
                              grad_unit.data_ptr<scalar_t>());
  });
  return {grad_phi, grad_w, grad_vec, grad_unit};
}

}  // namespace
}  // namespace e3relax

TORCH_LIBRARY_IMPL(e3relax, CPU, m) {
  m.impl("vector_message_forward", &e3relax::vector_message_forward_cpu);
  m.impl("vector_message_backward", &e3relax::vector_message_backward_cpu);
}
