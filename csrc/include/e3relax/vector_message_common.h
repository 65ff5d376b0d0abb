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
