// Per-(edge, channel) arithmetic of the fused scalar-vector message op, shared by the CPU and CUDA
// kernels. Torch-free so that nvcc compiles it without torch headers.
//
// For an edge e = (j -> i) and channel f, with phi = [pa | pb | pc] and w = [wa | wb | wc] split in thirds:
//   forward:  S_h[i,f]   += pc*wc
//             S_v[i,k,f] += (pa*wa) * vec[j,k,f] + unit[e,k] * (pb*wb)
//             dh = S_h / sqrt(3),  dvec = S_v / (sqrt(3) sqrt(F))          (scaled once, after the sum)
//   backward, with G = grad_dvec[i,:,f], g = grad_dh[i,f], s = 1/sqrt(3), t = 1/sqrt(F):
//             ga = t * (G . vec[j,:,f]),  gb = t * (G . unit[e]),  gc = g
//             grad_w[e]      = s * (ga*pa, gb*pb, gc*pc)
//             grad_phi[j]   += s * (ga*wa, gb*wb, gc*wc)
//             grad_vec[j,k] += s * t * (pa*wa) * G[k]
//             grad_unit[e,k] = s * t * sum_f G[k] * (pb*wb)
// Accumulators are of type acc_t (float for half/bfloat16 inputs, else the input type).
#pragma once

#include <cstdint>

#include "e3relax/host_device.h"

namespace e3relax {

template <typename acc_t>
struct ForwardTerms {
  acc_t h;      // pc*wc
  acc_t v[3];   // (pa*wa) vec + unit (pb*wb)
};

template <typename acc_t>
E3R_HOST_DEVICE ForwardTerms<acc_t> message_terms(acc_t pa, acc_t pb, acc_t pc, acc_t wa, acc_t wb, acc_t wc,
                                                  acc_t vx, acc_t vy, acc_t vz, acc_t ux, acc_t uy, acc_t uz) {
  const acc_t a = pa * wa;
  const acc_t b = pb * wb;
  ForwardTerms<acc_t> out;
  out.h = pc * wc;
  out.v[0] = a * vx + ux * b;
  out.v[1] = a * vy + uy * b;
  out.v[2] = a * vz + uz * b;
  return out;
}

// Adds the forward terms of one edge at channel q to its target's sums: out_h [F], out_v [3,F]; p = phi[j]
// [3F], v = vec[j] [3,F]; w* the edge's filter at channel q.
template <typename acc_t>
E3R_HOST_DEVICE void add_message(acc_t* out_h, acc_t* out_v, int64_t f, int64_t q, const acc_t* p, const acc_t* v,
                                 acc_t wa, acc_t wb, acc_t wc, acc_t ux, acc_t uy, acc_t uz) {
  const ForwardTerms<acc_t> t =
      message_terms<acc_t>(p[q], p[f + q], p[2 * f + q], wa, wb, wc, v[q], v[f + q], v[2 * f + q], ux, uy, uz);
  out_h[q] += t.h;
  out_v[q] += t.v[0];
  out_v[f + q] += t.v[1];
  out_v[2 * f + q] += t.v[2];
}

// The forward pass over target i's rows on the CPU (node-parallel kernels): zero i's sums, call
// edge(e, p = phi[j], v = vec[j], ux, uy, uz) for its edges in CSR order, which adds each edge's terms
// (add_message), then scale the sums. Shared by vector_message and radial_vector_message.
// Always inlined (as edge must be), so that it takes the instruction set of each caller's build.
template <typename scalar_t, typename EdgeFn>
[[gnu::always_inline]] inline void message_target_rows(int64_t i, int64_t f, const int64_t* rowptr, const int64_t* source,
                                const scalar_t* phi, const scalar_t* vec, const scalar_t* unit, scalar_t scale_h,
                                scalar_t scale_v, scalar_t* dh, scalar_t* dvec, EdgeFn&& edge) {
  scalar_t* out_h = dh + i * f;
  scalar_t* out_v = dvec + i * 3 * f;
  for (int64_t c = 0; c < f; ++c) out_h[c] = 0;
  for (int64_t c = 0; c < 3 * f; ++c) out_v[c] = 0;
  for (int64_t e = rowptr[i]; e < rowptr[i + 1]; ++e) {
    const int64_t j = source[e];
    edge(e, phi + j * 3 * f, vec + j * 3 * f, unit[3 * e], unit[3 * e + 1], unit[3 * e + 2], out_h, out_v);
  }
  for (int64_t c = 0; c < f; ++c) out_h[c] *= scale_h;
  for (int64_t c = 0; c < 3 * f; ++c) out_v[c] *= scale_v;
}

template <typename acc_t>
struct BackwardTerms {
  acc_t grad_w[3];     // into grad_w[e, f], [e, F+f], [e, 2F+f]
  acc_t grad_phi[3];   // added to grad_phi[j, f], [j, F+f], [j, 2F+f]
  acc_t grad_vec[3];   // added to grad_vec[j, k, f]
  acc_t grad_unit[3];  // this channel's share of grad_unit[e, k]
};

template <typename acc_t>
E3R_HOST_DEVICE BackwardTerms<acc_t> message_grad_terms(acc_t pa, acc_t pb, acc_t pc, acc_t wa, acc_t wb,
                                                         acc_t wc, acc_t vx, acc_t vy, acc_t vz, acc_t ux,
                                                         acc_t uy, acc_t uz, acc_t gx, acc_t gy, acc_t gz,
                                                         acc_t gh, acc_t s, acc_t t) {
  const acc_t ga = t * (gx * vx + gy * vy + gz * vz);
  const acc_t gb = t * (gx * ux + gy * uy + gz * uz);
  const acc_t a = pa * wa;
  const acc_t b = pb * wb;
  BackwardTerms<acc_t> out;
  out.grad_w[0] = s * ga * pa;
  out.grad_w[1] = s * gb * pb;
  out.grad_w[2] = s * gh * pc;
  out.grad_phi[0] = s * ga * wa;
  out.grad_phi[1] = s * gb * wb;
  out.grad_phi[2] = s * gh * wc;
  const acc_t st = s * t;
  out.grad_vec[0] = st * a * gx;
  out.grad_vec[1] = st * a * gy;
  out.grad_vec[2] = st * a * gz;
  out.grad_unit[0] = st * gx * b;
  out.grad_unit[1] = st * gy * b;
  out.grad_unit[2] = st * gz * b;
  return out;
}

}  // namespace e3relax
