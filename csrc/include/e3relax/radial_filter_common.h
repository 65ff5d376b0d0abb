// Per-edge arithmetic of radial_filter, shared by every device: the Gaussian basis of E3Relax times its
// polynomial envelope, restricted to the band of basis functions that are not negligible.
//
// Basis (nn/radial.py): phi_m(d) = env(t) exp(-(t - m/(M-1))^2 / (2/(M-1)^2)), t = d / cutoff, m < M.
// With x = t (M-1) the exponent is -(x - m)^2 / 2, so only m within band_half_width<T>() of x matter:
// in float64 (9) every omitted term is below exp(-9^2 / 2) = 2.6e-18 of the largest, under float64
// rounding (1.1e-16); in float32 (6) below exp(-6^2 / 2) = 1.5e-8, under float32 rounding (6.0e-8). The
// filter out = bias + W phi(d) thus costs 19 (float64) or 13 (float32) multiply-adds per output channel
// instead of M = 128.
#pragma once

#include <cmath>
#include <cstdint>

#include "e3relax/host_device.h"

namespace e3relax {

constexpr int kBandHalfWidth = 9;  // the widest band (float64): sizes per-edge buffers

template <typename T>
E3R_HOST_DEVICE constexpr int band_half_width() {
  return sizeof(T) >= sizeof(double) ? 9 : 6;
}

struct Band {
  int64_t first;  // first basis index of the band
  int64_t last;   // last basis index (inclusive); last < first when the edge is beyond the cutoff
};

// Basis indices within band_half_width<T>() of x = t (M-1); empty for t >= 1 (the envelope is zero there).
template <typename T>
E3R_HOST_DEVICE Band basis_band(T t, int64_t num_basis) {
  if (!(t < T(1))) return {0, -1};
  const T x = t * static_cast<T>(num_basis - 1);
  int64_t first = static_cast<int64_t>(std::ceil(x - T(band_half_width<T>())));
  int64_t last = static_cast<int64_t>(std::floor(x + T(band_half_width<T>())));
  if (first < 0) first = 0;
  if (last > num_basis - 1) last = num_basis - 1;
  return {first, last};
}

// Polynomial envelope 1 + a t^p + b t^(p+1) + c t^(p+2) (zero for t >= 1) and its derivative in t.
template <typename T>
struct Envelope {
  T value;
  T slope;
};

template <typename T>
E3R_HOST_DEVICE Envelope<T> polynomial_envelope(T t, int64_t exponent) {
  if (!(t < T(1))) return {T(0), T(0)};
  const T p = static_cast<T>(exponent);
  const T a = -(p + 1) * (p + 2) / 2, b = p * (p + 2), c = -p * (p + 1) / 2;
  T t_pm1 = T(1);  // t^(p-1)
  for (int64_t k = 1; k < exponent; ++k) t_pm1 *= t;
  const T t_p = t_pm1 * t;
  return {T(1) + t_p * (a + t * (b + c * t)), t_pm1 * (p * a + t * ((p + 1) * b + (p + 2) * c * t))};
}

// The band of distance t (in cutoff units): gauss[k] = env(t) exp(-(x - first - k)^2 / 2) for k < width,
// the basis functions phi_{first+k}(t); returns width (<= 0 beyond the cutoff: no term, the bias alone).
// gauss holds 2 kBandHalfWidth + 1 values.
template <typename T>
E3R_HOST_DEVICE int64_t band_gaussians(T t, int64_t num_basis, int64_t exponent, T* gauss, int64_t* first) {
  const Band band = basis_band(t, num_basis);
  *first = band.first;
  const int64_t width = band.last - band.first + 1;
  if (width > 0) {
    const T envelope = polynomial_envelope(t, exponent).value;
    const T x = t * static_cast<T>(num_basis - 1);
    for (int64_t k = 0; k < width; ++k) {
      const T dx = x - static_cast<T>(band.first + k);
      gauss[k] = envelope * std::exp(T(-0.5) * dx * dx);
    }
  }
  return width;
}

}  // namespace e3relax
